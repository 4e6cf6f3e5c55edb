"""Multi-worker mode (`bench/run.py --workers-scale`): requests/s of the full pipeline on
the Redis backend with `gatewise serve --workers 1` (pinned to core 0) and `--workers 2`
(unpinned: both cores, shared with wrk and nginx), next to the same single process on
the memory backend, which shows what the Redis round trips cost. Non-streaming only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import loadgen
import procs
import common
from procs import Target

# BENCH_REDIS_URL overrides it, e.g. "...?max_connections=1000" to lift redis-py's pool cap
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONFIG = common.BENCH / "configs" / "workers-openai.yaml"
LEVELS = (32, 128)
PATH = "/v1/chat/completions"
# name, state backend, workers, pinned to the proxy core
TARGETS = (("memory-1w", "memory", 1, True), ("redis-1w", "redis", 1, True),
           ("redis-2w", "redis", 2, False))


def _redis():
    import redis  # the gatewise[redis] extra, installed in .venv

    return redis.Redis.from_url(REDIS_URL, socket_timeout=2)


def _cleanup(prefix: str) -> int:
    """Delete every key under this run's prefix (SCAN + DEL); how many went."""
    client, gone = _redis(), 0
    batch = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            gone += client.delete(*batch)
            batch = []
    if batch:
        gone += client.delete(*batch)
    return gone


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _wait_workers(proc: subprocess.Popen, port: int, n: int, timeout: float = 20.0) -> list[int]:
    """The worker pids once all n listen on the port (SO_REUSEPORT: a worker that is not
    listening yet would get no connections, and the first run would measure one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        inodes = _listening_inodes(port)
        kids = [k for k in procs.children(proc.pid) if _holds(k, inodes)]
        if len(kids) == n:
            return kids
        time.sleep(0.1)
    raise RuntimeError(f"{n} workers not listening on {port} after {timeout}s")


def _start(name: str, config: Path, env: dict[str, str], workers: int, pinned: bool,
           workdir: Path) -> Target:
    reason = procs.check_config(config, env)
    if reason:
        return Target(name, "", skipped=f"config rejected: {reason}")
    port = procs.free_port()
    err = workdir / f"{name}.stderr"
    cmd = [str(procs.GATEWISE), "serve", "--config", str(config), "--port", str(port),
           "--workers", str(workers)]
    if pinned:
        cmd = ["taskset", "-c", common.PROXY_CPU] + cmd
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    try:
        procs.wait_port(port, proc)
        pids = _wait_workers(proc, port, workers) if workers > 1 else [proc.pid]
    except RuntimeError as exc:
        tail = err.read_text(errors="replace")[-300:]
        target = Target(name, "", proc, skipped=f"did not start: {exc}: {tail}")
        target.stop()
        return target
    return Target(name, f"http://127.0.0.1:{port}", proc, proc.pid, stderr_path=err,
                  extra={"pids": pids, "workers": workers, "pinned": pinned})


def _cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


def _redis_cpu(pid: int | None) -> float | None:
    try:
        return procs.cpu_seconds(pid) if pid else None
    except OSError:
        return None


def _config_for(backend: str, workdir: Path) -> Path:
    if backend == "redis":
        return CONFIG
    text = CONFIG.read_text()
    state = next(line for line in text.splitlines() if line.startswith("state:"))
    ledger = state[state.index("ledger:"):].rstrip("}").strip()
    path = workdir / "workers-openai-memory.yaml"
    path.write_text(text.replace(state, f"state: {{backend: memory, {ledger}}}"))
    return path


def workers_scale(args) -> dict:
    """Interleaved rounds (memory-1w, redis-1w, redis-2w per round and level), medians."""
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-workers-"))
    prefix_id = secrets.token_hex(6)
    prefix = f"gatewise-bench:{prefix_id}:"
    rounds, seconds = args.rounds, args.duration
    levels = list(LEVELS)
    redis_pid, redis_reason = None, None
    try:
        redis_pid = int(_redis().info("server")["process_id"])
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis to measure
        redis_reason = f"Redis at {REDIS_URL} unreachable: {exc}"
    body = workdir / "request.json"
    req = json.loads((common.BENCH / "bodies" / "request.json").read_text())
    req["model"] = "bench-json"
    body.write_text(json.dumps(req, separators=(",", ":")))
    up = common.Upstream(workdir)
    targets: list[Target] = []
    result = {"meta": {**common.machine(), "rounds": rounds, "duration_s": seconds,
                       "levels": levels, "redis_url": REDIS_URL, "prefix": prefix},
              "targets": {}, "levels": {}}
    try:
        for name, backend, workers, pinned in TARGETS:
            if backend == "redis" and redis_reason:
                targets.append(Target(name, "", skipped=redis_reason))
                continue
            env = {**common.gateway_env(up, workdir), "BENCH_PREFIX": prefix_id, "BENCH_TARGET": name,
                   "BENCH_REDIS_URL": REDIS_URL}
            env.pop("GATEWISE_WORKER", None)
            targets.append(_start(name, _config_for(backend, workdir), env, workers, pinned,
                                  workdir))
        live = []
        for t in targets:
            reason = t.skipped or loadgen.sanity(t.url + PATH, body, common.KEY, False, "openai")
            result["targets"][t.name] = {"skipped": reason}
            if reason is None:
                live.append(t)
                loadgen.run_wrk(t.url + PATH, 32, 1, body, common.LOAD_CPU, common.KEY)  # warm-up
            print(f"  workers {t.name}: {'ok' if reason is None else 'skipped: ' + reason}",
                  flush=True)
        for conns in levels:
            runs: dict[str, list[dict]] = {t.name: [] for t in live}
            for rnd in range(rounds):
                for t in live:
                    if t.proc.poll() is not None:
                        result["targets"][t.name]["skipped"] = f"exited with {t.proc.returncode}"
                        continue
                    cpu0, rcpu0 = _cpu(t.extra["pids"]), _redis_cpu(redis_pid)
                    r = loadgen.run_wrk(t.url + PATH, conns, seconds, body, common.LOAD_CPU, common.KEY)
                    if r["requests"]:
                        r["cpu_us_per_req"] = (_cpu(t.extra["pids"]) - cpu0) * 1e6 / r["requests"]
                        rcpu1 = _redis_cpu(redis_pid)
                        if rcpu0 is not None and rcpu1 is not None:
                            r["redis_cpu_us_per_req"] = (rcpu1 - rcpu0) * 1e6 / r["requests"]
                    r["ok_rps"] = (r["requests"] - r["error_count"]) / (r["duration_us"] / 1e6)
                    runs[t.name].append(r)
                    print(f"  workers c={conns} round {rnd + 1} {t.name}: {r['rps']:.0f} req/s "
                          f"p50 {r['latency_us']['p50'] / 1000:.2f} ms, "
                          f"{r.get('cpu_us_per_req', 0):.0f} µs/req, {r['error_count']} errors",
                          flush=True)
            result["levels"][str(conns)] = {}
            for name, rs in runs.items():
                if not rs:
                    continue
                med = common.summarize(rs)
                med["ok_rps"] = sorted(x["ok_rps"] for x in rs)[len(rs) // 2]
                med["requests"] = sum(x["requests"] for x in rs)
                redis_us = [x["redis_cpu_us_per_req"] for x in rs if "redis_cpu_us_per_req" in x]
                med["redis_cpu_us_per_req"] = sorted(redis_us)[len(redis_us) // 2] if redis_us \
                    else None
                result["levels"][str(conns)][name] = {"runs": rs, "median": med}
        for t in live:
            result["targets"][t.name]["peak_rss_kb"] = sum(
                procs.status_kb(pid, "VmHWM") for pid in t.extra["pids"])
    finally:
        for t in targets:
            t.stop()
        up.stop()
        if not redis_reason:
            result["meta"]["redis_keys_deleted"] = _cleanup(prefix)
    return result


def markdown(r: dict) -> str:
    m = r["meta"]
    out = [f"### Multi-worker — {m['date']}",
           (f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, commit "
            f"{m['commit']}; openai-json (non-streaming) through the full pipeline; "
            f"{m['rounds']} interleaved rounds × {m['duration_s']} s per level, medians. "
            "wrk and nginx on core 1. `memory-1w` and `redis-1w`: one process pinned to core 0. "
            "`redis-2w`: `--workers 2`, **not pinned** — the two workers share both cores with "
            "wrk and nginx, so it is not a clean 2× of core 0. CPU µs/req sums the worker "
            "processes (not the supervising parent); Redis CPU is the redis-server process's, "
            "which other users of this Redis also add to."), ""]
    skipped = {n: t["skipped"] for n, t in r["targets"].items() if t.get("skipped")}
    for conns, by_target in r["levels"].items():
        base = by_target.get("redis-1w", {}).get("median")
        out += [f"{conns} connections:", "",
                ("| target | req/s | 2xx req/s | 2xx vs redis-1w | p50 ms | p99 ms | "
                 "CPU µs/req | Redis CPU µs/req | non-2xx |"),
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, entry in by_target.items():
            med = entry["median"]
            ratio = f"{med['ok_rps'] / base['ok_rps']:.2f}×" if base and base["ok_rps"] else "—"
            cpu = "—" if med["cpu_us_per_req"] is None else f"{med['cpu_us_per_req']:.0f}"
            rcpu = "—" if med["redis_cpu_us_per_req"] is None \
                else f"{med['redis_cpu_us_per_req']:.0f}"
            share = f"{100 * med['errors'] / med['requests']:.0f} %" if med["requests"] else "—"
            out.append(f"| {name} | {med['rps']:.0f} | {med['ok_rps']:.0f} | {ratio} | "
                       f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {cpu} | {rcpu} | "
                       f"{med['errors']} ({share}) |")
        out.append("")
    out += [f"- {name}: skipped: {why}" for name, why in skipped.items()]
    if "redis_keys_deleted" in m:
        out.append(f"- Redis keys under `{m['prefix']}` deleted afterwards: "
                   f"{m['redis_keys_deleted']}")
    return "\n".join(out) + "\n"
