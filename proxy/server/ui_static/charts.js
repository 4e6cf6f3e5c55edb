/* gatewise page: small SVG line charts, no library. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 150, L = 46, R = 8, T = 8, B = 18;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* values: numbers or null (no data); format: value -> short label */
  function lineChart(svg, values, format) {
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const known = values.filter((v) => v !== null && v !== undefined);
    const top = Math.max(known.length ? Math.max(...known) : 0, 1e-9) * 1.15;
    const x = (i) => L + (i * (W - L - R)) / Math.max(1, values.length - 1);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    for (const frac of [0, 0.5, 1]) {
      const v = top * frac;
      svg.appendChild(el("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, format(v)));
    }
    [["−60 min", 0], ["−30 min", 0.5], ["now", 1]].forEach(([label, frac]) => {
      svg.appendChild(el("text", { x: L + frac * (W - L - R), y: H - 4,
        "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" }, label));
    });
    let line = "", area = "", open = false, first = 0;
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        if (open) area += `L${x(i - 1)},${y(0)}Z`;
        open = false;
        return;
      }
      if (!open) { line += `M${x(i)},${y(v)}`; area += `M${x(i)},${y(0)}L${x(i)},${y(v)}`; first = i; }
      else { line += `L${x(i)},${y(v)}`; area += `L${x(i)},${y(v)}`; }
      open = true;
    });
    if (open) area += `L${x(values.length - 1)},${y(0)}Z`;
    if (area) svg.appendChild(el("path", { class: "area", d: area }));
    if (line) svg.appendChild(el("path", { class: "line", d: line, "vector-effect": "non-scaling-stroke" }));
    return first;
  }

  window.gatewiseCharts = { lineChart };
})();
