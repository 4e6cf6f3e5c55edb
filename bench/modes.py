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


def _client(url: str, streams: int, interval_ms: int, target: Target | None) -> dict:
    """Run the stream client on the load core; sample the proxy's RSS while it runs."""
    cmd = ["taskset", "-c", common.LOAD_CPU, str(procs.VENV_PY), str(common.BENCH / "streamclient.py"),
           "--url", url, "--streams", str(streams)]
    before = procs.status_kb(target.pid, "VmRSS") if target else None
    cpu0 = procs.cpu_seconds(target.pid) if target else None
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
        result["rss_growth_kb"] = peak - before
        result["kb_per_stream"] = (peak - before) / streams
        if result["events"]:
            result["cpu_us_per_chunk"] = ((procs.cpu_seconds(target.pid) - cpu0) * 1e6
                                          / result["events"])
    return result


def stream_scale(args) -> dict:
    """direct, floor and gatewise-minimal at growing numbers of concurrent long streams.
    The proxy is restarted for each level so its RSS growth is that level's alone."""
    levels = [50, 200] if args.quick else [100, 1000]
    chunks, interval_ms = (50, 50) if args.quick else (200, 50)
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-scale-"))
    up = common.Upstream(workdir, chunks=chunks, interval_ms=interval_ms)
    rows, skipped = [], {}
    path = "/slow-openai-sse/v1/chat/completions"
    try:
        for streams in levels:
            direct = None
            for name in ("direct", "floor", "gatewise-minimal"):
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
                      f"{row['lag_p50_ms']:.1f} ms p99 {row['lag_p99_ms']:.1f} ms", flush=True)
                rows.append(row)
    finally:
        up.stop()
    return {"meta": common.machine(), "chunks": chunks, "interval_ms": interval_ms, "rows": rows,
            "skipped": skipped}
