"""The long modes: soak (RSS over minutes of steady load) and streaming scale."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import loadgen
import procs
import common
from procs import Target


def _gatewise(name: str, fmt_config: str, up: common.Upstream, workdir: Path) -> Target:
    return procs.start_gatewise(name, common.BENCH / "configs" / fmt_config,
                                common.gateway_env(up, workdir), common.PROXY_CPU, workdir)


def soak(args) -> dict:
    """gatewise-full (or -minimal while full is refused) under steady mixed load."""
    seconds = int(os.environ.get("SOAK_SECONDS", args.soak_seconds))
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-soak-"))
    up = common.Upstream(workdir)
    target = _gatewise("gatewise-full", "full-openai.yaml", up, workdir)
    config = "full-openai.yaml"
    if target.skipped:
        print(f"gatewise-full skipped ({target.skipped}); soaking gatewise-minimal")
        target, config = _gatewise("gatewise-minimal", "minimal-openai.yaml", up, workdir), \
            "minimal-openai.yaml"
    if target.skipped:
        up.stop()
        raise SystemExit(f"soak: gatewise did not start: {target.skipped}")
    bodies = []
    for model, stream in (("bench-json", False), ("bench-sse", True)):
        req = json.loads((common.BENCH / "bodies" / "request.json").read_text())
        req["model"], req["stream"] = model, stream
        path = workdir / f"soak-{model}.json"
        path.write_text(json.dumps(req))
        bodies.append(path)
    conns = 32
    url = target.url + "/v1/chat/completions"
    env = {**os.environ, "BENCH_BODY": str(bodies[0]), "BENCH_BODY2": str(bodies[1]),
           "BENCH_KEY": common.KEY}
    warmup = max(10, min(60, seconds // 10))
    samples: list[tuple[float, int]] = []
    try:
        wrk = subprocess.Popen(["taskset", "-c", common.LOAD_CPU, "wrk", "-t1", f"-c{conns}",
                                f"-d{seconds}s", "--timeout", "10s", "-s", str(loadgen.LUA), url],
                               env=env, stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while wrk.poll() is None:
            samples.append((time.monotonic() - t0, procs.status_kb(target.pid, "VmRSS")))
            print(f"  soak t={samples[-1][0]:.0f}s RSS {samples[-1][1] / 1024:.1f} MB", flush=True)
            try:
                wrk.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        out = wrk.stdout.read()
        summary = json.loads(next(line for line in out.splitlines()
                                  if line.startswith("BENCH_JSON "))[len("BENCH_JSON "):])
        samples.append((time.monotonic() - t0, procs.status_kb(target.pid, "VmRSS")))
        peak = procs.status_kb(target.pid, "VmHWM")
    finally:
        target.stop()
        up.stop()
    warm = next((kb for t, kb in samples if t >= warmup), samples[-1][1])
    end = samples[-1][1]
    return {"meta": common.machine(), "target": target.name, "config": config, "seconds": seconds,
            "conns": conns, "warmup_s": warmup, "samples": samples,
            "rss_warm_kb": warm, "rss_end_kb": end, "peak_kb": peak,
            "growth_pct": 100 * (end - warm) / warm,
            "rps": summary["requests"] / (summary["duration_us"] / 1e6),
            "errors": sum(summary["errors"].values())}


def _histogram(text: str | None, name: str) -> list[tuple[float, float]]:
    """[(le, cumulative count)] of an unlabelled histogram in a /metrics text."""
    out = []
    for line in (text or "").splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return out


def _lag(before: str | None, after: str | None) -> dict:
    """The event loop's lag while the streams ran (the difference of two scrapes): the
    p99 as the bucket bound it falls under, the mean, and the samples."""
    name = "gatewise_event_loop_lag_seconds"
    a, b = dict(_histogram(before, name)), _histogram(after, name)
    diff = [(le, count - a.get(le, 0.0)) for le, count in b]
    total = diff[-1][1] if diff else 0
    if not total:
        return {}
    p99 = next(le for le, count in diff if count >= 0.99 * total)

    def total_of(text: str | None, suffix: str) -> float:
        line = next((x for x in (text or "").splitlines() if x.startswith(name + suffix + " ")),
                    None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    seconds = total_of(after, "_sum") - total_of(before, "_sum")
    return {"loop_lag_p99_le_ms": p99 * 1000, "loop_lag_mean_ms": seconds / total * 1000,
            "loop_lag_samples": int(total)}


def _health(text: str | None) -> dict:
    """Breakers that are not closed, and chat answers that were not 200, from /metrics."""
    opened = [line for line in (text or "").splitlines()
              if line.startswith("gatewise_breaker_state{") and not line.endswith(" 0.0")]
    failed = sum(float(line.rsplit(" ", 1)[1]) for line in (text or "").splitlines()
                 if line.startswith('gatewise_requests_total{endpoint="chat"')
                 and 'status="200"' not in line)
    return {"breakers_not_closed": len(opened), "non_200": int(failed)}


def _client(url: str, streams: int, interval_ms: int, target: Target | None) -> dict:
    """Run the stream client on the load core; sample the proxy's RSS while it runs."""
    cmd = ["taskset", "-c", common.LOAD_CPU, str(procs.VENV_PY), str(common.BENCH / "streamclient.py"),
           "--url", url, "--streams", str(streams)]
    before = procs.status_kb(target.pid, "VmRSS") if target else None
    cpu0 = procs.cpu_seconds(target.pid) if target else None
    metrics0 = procs.fetch_metrics(target) if target else None
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = before or 0
    while client.poll() is None:
        if target:
            peak = max(peak, procs.status_kb(target.pid, "VmRSS"))
        time.sleep(0.25)
    line = next(line for line in client.stdout.read().splitlines()
                if line.startswith("SCALE_JSON "))
    result = json.loads(line[len("SCALE_JSON "):])
    if target:
        result["rss_before_kb"] = before
        result["rss_peak_kb"] = peak
        result["rss_growth_kb"] = peak - before
        result["kb_per_stream"] = (peak - before) / streams
        if result["events"]:
            result["cpu_us_per_chunk"] = ((procs.cpu_seconds(target.pid) - cpu0) * 1e6
                                          / result["events"])
        metrics1 = procs.fetch_metrics(target)
        result.update(_lag(metrics0, metrics1))
        if metrics1:
            result.update(_health(metrics1))
    return result


def stream_scale(args) -> dict:
    """direct, floor and gatewise-minimal at growing numbers of concurrent long streams.
    The proxy is restarted for each level so its RSS growth is that level's alone.
    `--scale-streams 5000 --scale-chunks 300 --scale-interval-ms 100` is the many-streams
    run of bench/README.md (30 s streams, one chunk every 100 ms)."""
    levels = [int(x) for x in args.scale_streams.split(",")] if args.scale_streams else \
        [50, 200] if args.quick else [100, 1000]
    chunks = args.scale_chunks or (50 if args.quick else 200)
    interval_ms = args.scale_interval_ms or 50
    names = args.targets.split(",") if args.targets else ["direct", "floor", "gatewise-minimal"]
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-scale-"))
    up = common.Upstream(workdir, chunks=chunks, interval_ms=interval_ms)
    rows, skipped = [], {}
    path = "/slow-openai-sse/v1/chat/completions"
    try:
        for streams in levels:
            direct = None
            for name in names:
                target = None
                if name == "direct":
                    url = up.url + path
                elif name == "floor":
                    target = procs.start_floor("floor", up.url, common.PROXY_CPU, workdir)
                    url = target.url + path
                else:
                    target = _gatewise(name, "minimal-openai.yaml", up, workdir)
                    if target.skipped:
                        skipped[name] = target.skipped
                        continue
                    url = target.url + "/v1/chat/completions"
                try:
                    time.sleep(0.3)
                    row = {"streams": streams, "target": name, **_client(url, streams, interval_ms,
                                                                          target)}
                finally:
                    if target:
                        target.stop()
                if name == "direct":
                    direct = row
                elif direct:
                    row["added_p50_ms"] = row["lag_p50_ms"] - direct["lag_p50_ms"]
                    row["added_p99_ms"] = row["lag_p99_ms"] - direct["lag_p99_ms"]
                print(f"  {streams} streams {name}: {row['completed']} completed, lag p50 "
                      f"{row['lag_p50_ms']:.1f} ms p99 {row['lag_p99_ms']:.1f} ms"
                      + (f", loop lag p99 <= {row['loop_lag_p99_le_ms']:g} ms"
                         if "loop_lag_p99_le_ms" in row else ""), flush=True)
                rows.append(row)
    finally:
        up.stop()
    return {"meta": common.machine(), "chunks": chunks, "interval_ms": interval_ms, "rows": rows,
            "skipped": skipped}
