/* gatewise page: polls /ui/api/state every 2 s and draws it. No framework, no
   build step; every value goes in through textContent, never as HTML. */
"use strict";
(function () {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let csrf = null, etag = null, state = null, keyApi = { create: false, revoke: false };
  let spendBy = "key", lastOk = 0;

  /* --- formatting ---------------------------------------------------------------- */
  const num = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: d }));
  const ms = (v) => (v === null || v === undefined ? "–" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`);
  const pct = (v, d = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(d)}%`);
  const usd = (v) => (v === null || v === undefined ? "–" : v === 0 ? "$0" : v < 0.01 ? `$${v.toFixed(5)}` : `$${v.toFixed(2)}`);
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const ago = (t) => { const s = Math.max(0, Date.now() / 1000 - t); return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`; };

  function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
  function pill(stateWord, text) {
    const span = document.createElement("span");
    span.className = "pill"; span.dataset.state = stateWord; span.textContent = text || stateWord.replace("_", " ");
    return span;
  }
  function stateCell(stateWord, reason) {
    const td = document.createElement("td");
    td.appendChild(pill(stateWord));
    if (reason) { const r = document.createElement("span"); r.className = "reason"; r.textContent = reason; td.appendChild(r); }
    return td;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  function lastError(e) { return e ? `${e.error}${e.status ? " (" + e.status + ")" : ""} · ${ago(e.at)}` : "none"; }

  /* --- server calls ------------------------------------------------------------------ */
  async function call(method, path, body) {
    const headers = { "x-csrf-token": csrf || "" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const resp = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (resp.status === 401) { location.assign("/ui/login"); throw new Error("logged out"); }
    const data = resp.status === 204 ? {} : await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((data.error && data.error.message) || `HTTP ${resp.status}`);
    return data;
  }

  async function poll() {
    try {
      const headers = etag ? { "if-none-match": etag } : {};
      const resp = await fetch("/ui/api/state", { headers, credentials: "same-origin" });
      if (resp.status === 401) { location.assign("/ui/login"); return; }
      if (resp.status === 200) { etag = resp.headers.get("etag"); state = await resp.json(); render(state); }
      if (resp.ok || resp.status === 304) lastOk = Date.now();
    } catch (err) { /* shown by the freshness line */ }
    freshness();
    setTimeout(poll, POLL_MS);
  }

  function freshness() {
    const f = $("freshness");
    if (!lastOk) { f.textContent = "connecting…"; return; }
    const s = (Date.now() - lastOk) / 1000;
    f.textContent = s < 6 ? `live · updated ${clock(state ? state.generated_at : Date.now() / 1000)}` : `NOT UPDATING for ${Math.round(s)} s`;
  }

  /* --- drawing ------------------------------------------------------------------------- */
  function render(s) {
    $("gateway").textContent = `${s.gateway} · v${s.version}`;
    const counts = { up: 0, degraded: 0, down: 0 };
    s.targets.forEach((t) => { counts[t.state] = (counts[t.state] || 0) + 1; });
    const breached = s.slos.filter((x) => x.state === "breach").length;
    const sick = s.models.filter((m) => m.state !== "up").length;
    const worst = counts.down || s.models.some((m) => m.state === "down") ? "down"
      : counts.degraded || sick || breached ? "degraded" : "up";
    const overall = $("overall");
    overall.dataset.state = worst;
    const troubles = [counts.down && `${counts.down} target(s) down`, counts.degraded && `${counts.degraded} degraded`,
      breached && `${breached} SLO(s) breached`].filter(Boolean);
    overall.textContent = troubles.length ? troubles.join(", ") : sick ? `${sick} model(s) not fully up` : "all up";
    $("sum-targets").textContent = counts.down || counts.degraded
      ? `${counts.up} up, ${counts.down} down` + (counts.degraded ? `, ${counts.degraded} degr.` : "")
      : `${counts.up} of ${s.targets.length} up`;
    const rps = s.models.reduce((a, m) => a + (m.rps || 0), 0);
    $("sum-rps").textContent = num(rps, 2);
    const judged = s.models.reduce((a, m) => a + (m.error_rate === null || m.error_rate === undefined ? 0 : 1), 0);
    const errs = s.models.reduce((a, m) => a + (m.error_rate || 0) * (m.rps || 0), 0);
    $("sum-errors").textContent = judged && rps ? pct(errs / rps) : "–";
    $("sum-today").textContent = s.spend ? usd(s.spend.day.total_usd) : "–";
    $("sum-month").textContent = s.spend ? usd(s.spend.month.total_usd) : "–";
    $("sum-slos").textContent = s.slos.length ? (breached ? `${breached} of ${s.slos.length} breached` : `${s.slos.length} met`) : "none set";

    fill($("models").tBodies[0], s.models.map((m) => {
      const tr = document.createElement("tr"); tr.dataset.model = m.model; tr.dataset.state = m.state;
      tr.append(cell(m.model), stateCell(m.state, m.reason), cell(num(m.rps, 2), "num"), cell(pct(m.error_rate), "num"),
        cell(ms(m.p50_ms), "num"), cell(ms(m.p95_ms), "num"), cell(ms(m.ttft_p95_ms), "num"), cell(lastError(m.last_error)));
      return tr;
    }));
    fill($("targets").tBodies[0], s.targets.map((t) => {
      const tr = document.createElement("tr"); tr.dataset.target = t.target; tr.dataset.state = t.state;
      const health = t.health === null ? "not checked" : t.health ? "passing" : "failing";
      tr.append(cell(t.target), stateCell(t.state, t.reason), cell(t.breaker), cell(health), cell(num(t.in_flight, 0), "num"),
        cell(num(t.rps, 2), "num"), cell(pct(t.error_rate), "num"), cell(ms(t.p50_ms), "num"), cell(ms(t.p95_ms), "num"),
        cell(ms(t.ttft_p95_ms), "num"), cell(lastError(t.last_error)));
      return tr;
    }));
    renderCharts(s.charts);
    renderSlos(s.slos);
    renderSpend(s);
    renderBudgets(s.budgets);
    renderEvents(s);
  }

  function renderCharts(c) {
    const { lineChart } = window.gatewiseCharts;
    const last = (arr) => { for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i]; return null; };
    lineChart($("chart-rps"), c.rps, (v) => num(v, v < 10 ? 1 : 0));
    lineChart($("chart-p95"), c.p95_ms, (v) => ms(v));
    lineChart($("chart-spend"), c.spend_usd, (v) => usd(v));
    $("now-rps").textContent = `${num(last(c.rps), 2)} /s`;
    $("now-p95").textContent = ms(last(c.p95_ms));
    $("now-spend").textContent = `${usd(c.spend_usd.reduce((a, v) => a + (v || 0), 0))} this hour`;
  }

  function renderSlos(slos) {
    $("slos-empty").hidden = slos.length > 0;
    $("slos").hidden = slos.length === 0;
    fill($("slos").tBodies[0], slos.map((x) => {
      const tr = document.createElement("tr"); tr.dataset.slo = x.id; tr.dataset.state = x.state === "breach" ? "down" : x.state === "ok" ? "up" : "";
      const now = x.value === null ? "–" : x.objective === "availability" ? pct(x.value, 2) : ms(x.value);
      const word = x.state === "breach" ? "breached" : x.state === "ok" ? "met" : "no data";
      tr.append(cell(x.text.split(":")[0]), (() => { const td = document.createElement("td"); td.appendChild(pill(x.state, word)); return td; })(),
        cell(now, "num"), cell(x.burn_rate === null ? "–" : `${num(x.burn_rate, 2)}×`, "num"),
        cell(`${x.samples} / ${x.min_requests}`, "num"), cell(num(x.breaches, 0), "num"), cell(x.since ? ago(x.since) : "–"));
      return tr;
    }));
  }

  function renderSpend(s) {
    const note = $("spend-note");
    if (!s.spend) { note.textContent = s.spend_error || "No ledger: configure a budget or state.ledger to see spend."; fill($("spend").tBodies[0], []); return; }
    note.textContent = `Today ${usd(s.spend.day.total_usd)} in ${num(s.spend.day.requests, 0)} requests · this month ${usd(s.spend.month.total_usd)} (UTC, from the ledger)`;
    $("spend-by").textContent = spendBy[0].toUpperCase() + spendBy.slice(1);
    const month = new Map(s.spend.month[spendBy].map((r) => [r[spendBy], r]));
    const day = new Map(s.spend.day[spendBy].map((r) => [r[spendBy], r]));
    const names = [...new Set([...month.keys()])];
    fill($("spend").tBodies[0], names.map((name) => {
      const tr = document.createElement("tr"); tr.dataset.name = name === null ? "" : name;
      const d = day.get(name), m = month.get(name);
      tr.append(cell(name === null ? "(none)" : name), cell(usd(d ? d.cost_usd : 0), "num"), cell(num(d ? d.requests : 0, 0), "num"), cell(usd(m.cost_usd), "num"));
      return tr;
    }));
  }

  function renderBudgets(budgets) {
    $("budgets-empty").hidden = budgets.length > 0;
    $("budgets").replaceChildren(...budgets.map((b) => {
      const box = document.createElement("div"); box.className = "budget"; box.dataset.scope = b.scope;
      const head = document.createElement("div"); head.className = "head";
      const who = document.createElement("span"); who.append(`${b.who} · per ${b.per} `, pill(b.state, b.reason));
      const amount = document.createElement("span"); amount.textContent = `${usd(b.spent_usd)} of ${usd(b.usd)} (${pct(b.fraction, 0)})`;
      head.append(who, amount);
      const bar = document.createElement("div"); bar.className = "bar"; bar.dataset.state = b.state;
      bar.setAttribute("role", "meter"); bar.setAttribute("aria-valuenow", String(b.fraction)); bar.setAttribute("aria-label", `${b.who} budget used`);
      const fillEl = document.createElement("div"); fillEl.className = "fill"; fillEl.style.width = `${Math.min(100, b.fraction * 100)}%`;
      bar.appendChild(fillEl);
      b.thresholds.forEach((t) => { const tick = document.createElement("div"); tick.className = "tick"; tick.style.left = `${t * 100}%`;
        const l = document.createElement("span"); l.textContent = pct(t, 0); tick.appendChild(l); bar.appendChild(tick); });
      box.append(head, bar);
      return box;
    }));
  }

  function renderEvents(s) {
    const st = s.alert_stats;
    $("alerts-note").textContent = `${st.emitted} raised, ${st.suppressed} held back by the cool-down` +
      (s.alert_sinks.length ? ` · sent to ${s.alert_sinks.join(", ")}` : " · no webhook configured (log only)");
    $("alerts").replaceChildren(...(s.alerts.length ? s.alerts.map((a) => {
      const li = document.createElement("li"); li.dataset.event = a.event;
      const t = document.createElement("time"); t.textContent = clock(a.timestamp);
      const head = document.createElement("div"); head.append(pill(a.severity, a.event.replace(/_/g, " ")), ` ${a.subject}`);
      const detail = document.createElement("div"); detail.className = "detail";
      const sent = a.deliveries.map((d) => `${d.sink}: ${d.state}`).join(", ");
      detail.textContent = a.message + (sent ? ` — ${sent}` : "");
      li.append(t, head, detail); return li;
    }) : [emptyItem("No alerts yet.")]));
    $("errors").replaceChildren(...(s.errors.length ? s.errors.map((e) => {
      const li = document.createElement("li");
      const t = document.createElement("time"); t.textContent = clock(e.at);
      const head = document.createElement("div"); head.textContent = `${e.status || ""} ${e.error || ""} · ${e.model}${e.target ? " → " + e.target : ""}`;
      const detail = document.createElement("div"); detail.className = "detail"; detail.textContent = `${e.kind === "attempt" ? "upstream attempt" : "request"} ${e.request_id}`;
      li.append(t, head, detail); return li;
    }) : [emptyItem("No errors.")]));
  }
  function emptyItem(text) { const li = document.createElement("li"); li.className = "empty"; li.textContent = text; return li; }

  /* --- keys ------------------------------------------------------------------------------ */
  async function loadKeys() {
    try {
      const data = await call("GET", "/ui/api/keys");
      fill($("keys").tBodies[0], data.data.map((k) => {
        const tr = document.createElement("tr"); tr.dataset.key = k.name;
        const limits = [k.rpm && `${k.rpm} rpm`, k.tpm && `${k.tpm} tpm`, k.max_concurrent && `${k.max_concurrent} at once`].filter(Boolean).join(", ") || "none";
        const budget = k.budget ? `${usd(k.budget.spent_usd || 0)} of ${usd(k.budget.usd)} per ${k.budget.per}` : "none";
        const action = document.createElement("td");
        if (keyApi.revoke && k.source !== "file") {
          const b = document.createElement("button"); b.type = "button"; b.className = "danger"; b.textContent = "Revoke";
          b.addEventListener("click", () => revoke(k.name)); action.appendChild(b);
        } else { action.textContent = k.source === "file" || !keyApi.revoke ? "config file" : ""; }
        tr.append(cell(k.name), cell((k.models || ["*"]).join(", ")), cell(limits), cell(budget), action);
        return tr;
      }));
    } catch (err) { $("keys-note").textContent = `Keys could not be listed: ${err.message}`; }
  }

  async function revoke(name) {
    if (!confirm(`Revoke key "${name}"? Requests with it are refused at once.`)) return;
    try { await call("DELETE", `/ui/api/keys/${encodeURIComponent(name)}`); $("keys-note").textContent = `Key ${name} revoked.`; }
    catch (err) { $("keys-note").textContent = `Revoking ${name} failed: ${err.message}`; }
    loadKeys();
  }

  async function create(event) {
    event.preventDefault();
    const form = event.target, f = (n) => form.elements.namedItem(n);
    const body = { name: f("name").value.trim() };
    const models = f("models").value.split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    if (f("rpm").value.trim()) body.rpm = Number(f("rpm").value);
    if (f("usd").value.trim()) body.budget = { usd: Number(f("usd").value), per: "day" };
    try {
      const made = await call("POST", "/ui/api/keys", body);
      $("key-secret-name").textContent = made.name || body.name;
      $("key-secret-value").textContent = made.key || made.secret || made.api_key || "(the API returned no secret)";
      $("key-secret").hidden = false;
      form.reset();
      $("keys-note").textContent = "";
    } catch (err) { $("keys-note").textContent = `Creating the key failed: ${err.message}`; }
    loadKeys();
  }

  /* --- start ------------------------------------------------------------------------------ */
  async function start() {
    const session = await call("GET", "/ui/api/session");
    csrf = session.csrf;
    keyApi = session.key_api;
    $("key-create").hidden = !keyApi.create;
    $("keys-note").textContent = keyApi.create ? "Keys from the config file and from the key API."
      : "Keys come from the config file (this gateway has no key API): listed here, changed in the file.";
    $("key-create").addEventListener("submit", create);
    $("key-secret-done").addEventListener("click", () => { $("key-secret").hidden = true; $("key-secret-value").textContent = ""; });
    $("logout").addEventListener("click", async () => { try { await call("POST", "/ui/logout"); } finally { location.assign("/ui/login"); } });
    document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => {
      spendBy = b.dataset.by;
      document.querySelectorAll(".tabs button").forEach((o) => o.setAttribute("aria-selected", String(o === b)));
      if (state) renderSpend(state);
    }));
    loadKeys();
    setInterval(loadKeys, 5000);
    setInterval(freshness, 1000);
    poll();
  }
  document.addEventListener("DOMContentLoaded", () => { start().catch(() => {}); });
})();
