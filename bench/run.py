"""The benchmark: what gatewise adds to a request, side by side with `direct` and
`floor`, in one run. See bench/README.md. Usage:

  .venv/bin/python bench/run.py [--quick] [--only openai-json,...]   # tables
  .venv/bin/python bench/run.py --soak [--soak-seconds 600]           # RSS over time
  .venv/bin/python bench/run.py --stream-scale [--quick]              # many long streams
  .venv/bin/python bench/run.py --workers-scale                       # --workers 1 vs 2 on Redis
  .venv/bin/python bench/run.py --peers [--quick]                     # + LiteLLM and Portkey
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import loadgen
import modes
import multiworker
import peers
import procs
import report
import uipoll
import upstream
from common import (BENCH, KEY, LOAD_CPU, PROXY_CPU, RESULTS, Upstream, gateway_env, machine,
                    require_tools, summarize)
from procs import Target



@dataclass(frozen=True)
class Scenario:
    name: str
    fmt: str           # upstream wire format: openai | anthropic
    location: str      # nginx location (bench/upstream.py)
    model: str         # gatewise model name in bench/configs/*
    stream: bool
    latency_ms: int = 0
    levels: tuple[int, ...] | None = None  # None: the run's default levels

    @property
    def upstream_path(self) -> str:
        tail = "/v1/messages" if self.fmt == "anthropic" else "/v1/chat/completions"
        return f"/{self.location}{tail}"


SCENARIOS = [
    Scenario("openai-json", "openai", "openai-json", "bench-json", False),
    Scenario("openai-sse", "openai", "openai-sse", "bench-sse", True),
    Scenario("openai-json-60ms", "openai", "lat60/openai-json", "bench-json-60", False, 60, (32,)),
    Scenario("anthropic-json", "anthropic", "anthropic-json", "bench-json", False),
    Scenario("anthropic-sse", "anthropic", "anthropic-sse", "bench-sse", True),
]


def accesslog_config(workdir: Path) -> Path:
    """minimal-openai.yaml with the per-request access log on (written to a file)."""
    text = (BENCH / "configs" / "minimal-openai.yaml").read_text()
    path = workdir / "minimal-openai-accesslog.yaml"
    path.write_text(text.replace("log_level: warning", "log_level: info"))
    return path


def start_targets(fmt: str, up: Upstream, workdir: Path, wanted: set[str] | None,
                  baseline: Path | None = None) -> list[Target]:
    env = gateway_env(up, workdir)
    specs = [("direct", None), ("floor", None),
             ("gatewise-minimal", BENCH / "configs" / f"minimal-{fmt}.yaml"),
             ("gatewise-full", BENCH / "configs" / f"full-{fmt}.yaml")]
    if baseline is not None:  # the same configs, served by another checkout's code
        specs[2:2] = [("gatewise-minimal@base", BENCH / "configs" / f"minimal-{fmt}.yaml"),
                      ("gatewise-full@base", BENCH / "configs" / f"full-{fmt}.yaml")]
    if fmt == "openai":
        specs.append(("gatewise-minimal+accesslog", accesslog_config(workdir)))
        # the page's cost: served but closed (+admin), and open, polled every 2 s (+ui)
        specs.append(("gatewise-full+admin", uipoll.ui_config(workdir, fmt)))
        specs.append(("gatewise-full+ui", uipoll.ui_config(workdir, fmt)))
        specs.append(("gatewise-full+routes", BENCH / "configs" / "full-routes-openai.yaml"))
    targets = []
    for name, config in specs:
        if wanted and name not in wanted:
            continue
        if name == "direct":
            targets.append(Target("direct", up.url, pid=up.worker))
        elif name == "floor":
            targets.append(procs.start_floor("floor", up.url, PROXY_CPU, workdir))
        else:
            tree = baseline if name.endswith("@base") else None
            targets.append(procs.start_gatewise(name, config, env, PROXY_CPU, workdir, tree))
            if name.endswith("+ui") and not targets[-1].skipped:  # the page stays open
                targets[-1].extra["poller"] = uipoll.UiPoller(targets[-1].url)
                targets[-1].extra["poller"].start()
    return targets


def peer_headers(target: Target, sc: Scenario) -> dict[str, str] | None:
    make = target.extra.get("headers")
    return make(sc) if make else None


def target_url(target: Target, sc: Scenario) -> str:
    if target.name in ("direct", "floor"):
        return target.url + sc.upstream_path
    return target.url + "/v1/chat/completions"


def run_scenario(sc: Scenario, targets: list[Target], args, workdir: Path) -> dict:
    body = workdir / f"request-{sc.name}.json"
    req = json.loads((BENCH / "bodies" / "request.json").read_text())
    req["model"] = sc.model
    if sc.stream:
        req["stream"] = True
    body.write_text(json.dumps(req, separators=(",", ":")))
    result = {"name": sc.name, "fmt": sc.fmt, "stream": sc.stream, "latency_ms": sc.latency_ms,
              "targets": {}, "levels": {}}
    live = []
    for t in targets:
        reason = t.skipped
        if reason is None:
            fmt_out = sc.fmt if t.name in ("direct", "floor") else "openai"
            reason = loadgen.sanity(target_url(t, sc), body, KEY, sc.stream, fmt_out,
                                    peer_headers(t, sc))
        result["targets"][t.name] = {"skipped": reason}
        if reason is None:
            live.append(t)
            loadgen.run_wrk(target_url(t, sc), 32, 1, body, LOAD_CPU, KEY,  # warm-up
                            headers=peer_headers(t, sc))
        print(f"  {sc.name} {t.name}: {'ok' if reason is None else 'skipped: ' + reason}",
              flush=True)
    metrics_before = {t.name: procs.overhead_samples(procs.fetch_metrics(t)) for t in live}
    dead: dict[str, str] = {}
    levels = sc.levels or args.levels
    if args.quick and sc.levels:
        levels = sc.levels[:1]
    for conns in levels:
        runs: dict[str, list[dict]] = {t.name: [] for t in live}
        for rnd in range(args.rounds):  # A B A B: every target once per round
            for t in live:
                if t.name in dead:
                    continue
                cpu0 = procs.cpu_seconds(t.pid) if t.pid else None
                try:
                    run = loadgen.run_wrk(target_url(t, sc), conns, args.duration, body,
                                          LOAD_CPU, KEY, headers=peer_headers(t, sc))
                except RuntimeError as exc:
                    run = None
                    dead[t.name] = str(exc)[:200]
                if run is None or (t.proc is not None and t.proc.poll() is not None):
                    dead.setdefault(t.name, f"exited with {t.proc.returncode if t.proc else '?'}")
                    result["targets"][t.name]["skipped"] = f"failed mid-run: {dead[t.name]}"
                    print(f"  {sc.name} {t.name}: failed mid-run: {dead[t.name]}", flush=True)
                    continue
                if cpu0 is not None and run["requests"]:
                    run["cpu_us_per_req"] = (procs.cpu_seconds(t.pid) - cpu0) * 1e6 / run["requests"]
                runs[t.name].append(run)
                print(f"  {sc.name} c={conns} round {rnd + 1} {t.name}: {run['rps']:.0f} req/s "
                      f"p50 {run['latency_us']['p50'] / 1000:.2f} ms, {run['error_count']} errors",
                      flush=True)
        result["levels"][str(conns)] = {name: {"runs": r, "median": summarize(r)}
                                        for name, r in runs.items() if r}
    for t in live:
        if t.name in dead:
            continue
        entry = result["targets"][t.name]
        entry["peak_rss_kb"] = procs.status_kb(t.pid, "VmHWM") if t.pid else None
        entry["overhead"] = procs.overhead_summary(
            metrics_before[t.name], procs.overhead_samples(procs.fetch_metrics(t)), sc.model)
    return result


def bench(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-bench-"))
    wanted_sc = set(args.only.split(",")) if args.only else None
    wanted_t = set(args.targets.split(",")) if args.targets else None
    up = Upstream(workdir)
    results = {"meta": {**machine(), "mode": "quick" if args.quick else "full",
                        "rounds": args.rounds, "duration_s": args.duration,
                        "levels": args.levels, "echo_module": upstream.has_echo_module(),
                        "baseline": baseline_commit(args.baseline)},
               "scenarios": []}
    try:
        for fmt in ("openai", "anthropic"):
            scenarios = [s for s in SCENARIOS if s.fmt == fmt
                         and (not wanted_sc or s.name in wanted_sc)]
            if not scenarios:
                continue
            targets = start_targets(fmt, up, workdir, wanted_t, args.baseline)
            if args.peers:  # started after gatewise: their installs must not skew its warm-up
                targets += peers.start_peers(fmt, up, PROXY_CPU, workdir,
                                             gateway_env(up, workdir), wanted_t)
            try:
                for sc in scenarios:
                    if sc.latency_ms and not upstream.has_echo_module():
                        results["scenarios"].append({"name": sc.name, "skipped":
                                                     "nginx echo module not installed"})
                        continue
                    results["scenarios"].append(run_scenario(sc, targets, args, workdir))
            finally:
                for t in targets:
                    try:
                        if "poller" in t.extra:
                            results.setdefault("ui_polls", {})[t.name] = t.extra["poller"].stop()
                    finally:
                        t.stop()
    finally:
        up.stop()
    return results


def baseline_commit(tree: Path | None) -> str | None:
    if tree is None:
        return None
    out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or str(tree)


def save(results: dict, kind: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~1-2 minutes instead of ~5-10")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--targets", help="comma-separated target names")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=int, help="seconds per wrk run (integer)")
    parser.add_argument("--levels", help="comma-separated connection counts, e.g. 1,32,128")
    parser.add_argument("--soak", action="store_true", help="steady load, RSS over time")
    parser.add_argument("--soak-seconds", type=int, default=600)
    parser.add_argument("--stream-scale", action="store_true", help="many concurrent long streams")
    parser.add_argument("--peers", action="store_true",
                        help="also LiteLLM's proxy and Portkey's gateway (installed on first use)")
    parser.add_argument("--scale-streams", help="comma-separated stream counts, e.g. 5000")
    parser.add_argument("--scale-chunks", type=int, help="chunks per stream")
    parser.add_argument("--scale-interval-ms", type=int, help="ms between chunks")
    parser.add_argument("--baseline", type=Path,
                        help="also serve gatewise-minimal@base and gatewise-full@base from "
                             "this checkout (e.g. a git worktree of an earlier commit)")
    parser.add_argument("--workers-scale", action="store_true",
                        help="full pipeline on Redis: --workers 1 vs 2, and the memory backend")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.duration = args.duration or (1 if args.quick else 3)
    args.levels = ([int(x) for x in args.levels.split(",")] if args.levels
                   else [1, 32] if args.quick else [1, 32, 128])
    require_tools()
    if args.soak:
        results = modes.soak(args)
        kind, text = "soak", report.soak_markdown(results)
    elif args.stream_scale:
        results = modes.stream_scale(args)
        kind, text = "stream-scale", report.scale_markdown(results)
    elif args.workers_scale:
        results = multiworker.workers_scale(args)
        kind, text = "workers", multiworker.markdown(results)
    else:
        results = bench(args)
        kind, text = "bench", report.markdown(results)
    path = save(results, kind)
    path.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
