"""Markdown tables from the raw results, and the DESIGN.md §7 targets checked against them."""

from __future__ import annotations


def _f(value, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown(results: dict) -> str:
    m = results["meta"]
    out = [f"### gatewise benchmark — {m['date']} — {m['mode']} mode",
           (f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
           f"commit {m['commit']}; {m['rounds']} interleaved rounds × {m['duration_s']} s per "
           "level, medians. Proxy under test on core 0; wrk and nginx on core 1."
           + (f" `@base`: the same configs served by commit {m['baseline']}."
              if m.get("baseline") else "")), ""]
    for sc in results["scenarios"]:
        out += scenario_table(sc)
    for name, p in results.get("ui_polls", {}).items():
        out.append(f"- {name}: the /ui page polled every 2 s throughout: {p['polls']} polls, "
                   f"{p['errors']} errors, {p['bytes'] / max(1, p['polls']) / 1024:.1f} KB each, "
                   f"answered in {_f(p['p50_ms'], '{:.2f}')} ms median, "
                   f"{_f(p['max_ms'], '{:.1f}')} ms at most (under load)")
    out += ["", "#### Targets (DESIGN.md §7)", ""] + [f"- {line}" for line in checks(results)] + [""]
    return "\n".join(out)


def scenario_table(sc: dict) -> list[str]:
    if sc.get("skipped"):
        return [f"#### {sc['name']}: skipped: {sc['skipped']}", ""]
    kind = "streaming" if sc["stream"] else "non-streaming"
    lat = f", upstream latency {sc['latency_ms']} ms" if sc["latency_ms"] else ""
    out = [f"#### {sc['name']} ({sc['fmt']}-format upstream, {kind}{lat})", ""]
    skipped = {n: t["skipped"] for n, t in sc["targets"].items() if t["skipped"]}
    for conns, by_target in sc["levels"].items():
        direct = by_target.get("direct", {}).get("median")
        floor = by_target.get("floor", {}).get("median")
        out += [f"{conns} connection(s):", "",
                ("| target | req/s | p50 ms | p90 ms | p99 ms | added p50 / p99 ms | % of floor "
                "req/s | CPU µs/req | peak RSS MB | errors |"),
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, entry in by_target.items():
            med = entry["median"]
            added = (f"{med['p50_ms'] - direct['p50_ms']:+.2f} / {med['p99_ms'] - direct['p99_ms']:+.2f}"
                     if direct and name != "direct" else "—")
            share = f"{100 * med['rps'] / floor['rps']:.0f} %" if floor and name != "direct" else "—"
            rss = sc["targets"][name].get("peak_rss_kb")
            out.append(f"| {name} | {med['rps']:.0f} | {med['p50_ms']:.2f} | {med['p90_ms']:.2f} | "
                       f"{med['p99_ms']:.2f} | {added} | {share} | "
                       f"{_f(med['cpu_us_per_req'], '{:.0f}')} | {_f(rss and rss / 1024, '{:.1f}')} | "
                       f"{med['errors']} |")
        out.append("")
    for name, reason in skipped.items():
        out.append(f"- {name}: skipped: {reason}")
    for name, t in sc["targets"].items():
        o = t.get("overhead")
        if o:
            out.append(f"- {name}, its own overhead histogram (/metrics, this scenario): "
                       f"{o['count']} requests, mean {o['mean_ms']:.3f} ms, median ≤ "
                       f"{_f(o['p50_le_ms'], '{:g}')} ms, p99 ≤ {_f(o['p99_le_ms'], '{:g}')} ms")
    out.append("")
    return out


def _level(sc: dict, pick) -> tuple[str, dict] | None:
    levels = sorted(sc.get("levels", {}), key=int)
    chosen = pick(levels)
    return (chosen, sc["levels"][chosen]) if chosen else None


def checks(results: dict) -> list[str]:
    lines = []
    for sc in results["scenarios"]:
        if sc.get("skipped") or not sc.get("levels") or sc["latency_ms"]:
            continue
        top = _level(sc, lambda ls: ls[-1] if ls else None)
        one = _level(sc, lambda ls: "1" if "1" in ls else None)
        want = 50 if sc["fmt"] == "anthropic" and sc["stream"] else 70
        for name in ("gatewise-full", "gatewise-minimal"):
            if top and name in top[1] and "floor" in top[1]:
                share = 100 * top[1][name]["median"]["rps"] / top[1]["floor"]["median"]["rps"]
                lines.append(f"{sc['name']} {name}: {share:.0f} % of floor's req/s at c={top[0]} "
                             f"(target ≥ {want} %) — {'met' if share >= want else 'MISSED'}")
            if one and name in one[1] and {"floor", "direct"} <= set(one[1]):
                d, f, g = (one[1][n]["median"] for n in ("direct", "floor", name))
                e50 = (g["p50_ms"] - d["p50_ms"]) - (f["p50_ms"] - d["p50_ms"])
                e99 = (g["p99_ms"] - d["p99_ms"]) - (f["p99_ms"] - d["p99_ms"])
                ok = e50 <= 0.3 and e99 <= 1.0
                lines.append(f"{sc['name']} {name} at c=1: added latency over floor's "
                             f"p50 {e50:+.2f} ms (≤ +0.3), p99 {e99:+.2f} ms (≤ +1) — "
                             f"{'met' if ok else 'MISSED'}")
        for conns, level in sorted(sc["levels"].items(), key=lambda kv: int(kv[0])):
            base, routed = (level.get(n, {}).get("median", {}).get("cpu_us_per_req")
                            for n in ("gatewise-full", "gatewise-full+routes"))
            if base and routed:
                extra = 100 * (routed / base - 1)
                lines.append(f"{sc['name']} c={conns} gatewise-full+routes: CPU {routed:.0f} µs "
                             f"per request vs {base:.0f} ({extra:+.1f} %, target ≤ +5 %) — "
                             f"{'met' if extra <= 5 else 'MISSED'}")
    return lines or ["no scenario had both floor and gatewise measured"]


def soak_markdown(r: dict) -> str:
    out = [f"### gatewise soak — {r['meta']['date']}", "",
           (f"{r['target']} ({r['config']}), {r['seconds']} s at {r['conns']} connections, JSON and "
           f"streaming requests alternated: {r['rps']:.0f} req/s, {r['errors']} errors."), "",
           (f"RSS after warm-up ({r['warmup_s']} s): {r['rss_warm_kb'] / 1024:.1f} MB; at the end: "
           f"{r['rss_end_kb'] / 1024:.1f} MB; growth {r['growth_pct']:+.1f} % (target < 5 %) — "
           f"{'met' if r['growth_pct'] < 5 else 'MISSED'}. Peak RSS {r['peak_kb'] / 1024:.1f} MB."),
           "", "| t (s) | RSS MB |", "|---:|---:|"]
    out += [f"| {t:.0f} | {kb / 1024:.1f} |" for t, kb in r["samples"]]
    return "\n".join(out) + "\n"


def scale_markdown(r: dict) -> str:
    out = [f"### gatewise streaming scale — {r['meta']['date']}", "",
           (f"Each stream: {r['chunks']} chunks from nginx, one every {r['interval_ms']} ms. "
           "Chunk lag = arrival time − the upstream's send stamp in the chunk (nginx `$msec`, "
           "ms resolution); 'added' is over `direct` "
           "at the same number of streams."), "",
           ("| streams | target | completed | chunk lag p50 / p99 ms | added p50 / p99 ms | "
           "RSS growth MB | KB per open stream | CPU µs per chunk | loop lag p99 / mean ms | "
           "breakers opened | non-200 |"),
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        out.append(f"| {row['streams']} | {row['target']} | {row['completed']}/{row['streams']} | "
                   f"{row['lag_p50_ms']:.1f} / {row['lag_p99_ms']:.1f} | "
                   f"{_f(row.get('added_p50_ms'), '{:+.1f}')} / {_f(row.get('added_p99_ms'), '{:+.1f}')} | "
                   f"{_f(row.get('rss_growth_kb') and row['rss_growth_kb'] / 1024, '{:.1f}')} | "
                   f"{_f(row.get('kb_per_stream'), '{:.1f}')} | "
                   f"{_f(row.get('cpu_us_per_chunk'), '{:.1f}')} | "
                   f"{_f(row.get('loop_lag_p99_le_ms'), '≤ {:g}')} / "
                   f"{_f(row.get('loop_lag_mean_ms'), '{:.1f}')} | "
                   f"{_f(row.get('breakers_not_closed'), '{}')} | {_f(row.get('non_200'), '{}')} |")
    for name, reason in r.get("skipped", {}).items():
        out.append(f"\n- {name}: skipped: {reason}")
    return "\n".join(out) + "\n"
