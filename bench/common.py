"""What every benchmark mode shares: paths, CPU pinning, the nginx upstream, tools, summaries."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import procs
import upstream

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PROXY_CPU, LOAD_CPU = "0", "1"
KEY = "sk-bench-0123456789abcdef0123"
INSTALL = "apt-get update && apt-get install -y nginx-light wrk libnginx-mod-http-echo"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
                            check=False, capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version(), "commit": commit}


def require_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk", "taskset") if not shutil.which(tool)
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}; install with:\n  {INSTALL}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it


class Upstream:
    def __init__(self, workdir: Path, **kwargs) -> None:
        self.port = procs.free_port()
        self.proc = upstream.start(workdir / "nginx", self.port, LOAD_CPU, **kwargs)
        procs.wait_port(self.port, self.proc)
        time.sleep(0.2)
        self.worker = procs.children(self.proc.pid)[0]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def gateway_env(up: Upstream, workdir: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_UPSTREAM": up.url, "BENCH_KEY": KEY, "BENCH_TMP": str(workdir)}


def summarize(runs: list[dict]) -> dict:
    med = statistics.median
    out = {"rps": med(r["rps"] for r in runs), "errors": sum(r["error_count"] for r in runs)}
    for p in ("p50", "p90", "p99"):
        out[p + "_ms"] = med(r["latency_us"][p] for r in runs) / 1000
    cpu = [r["cpu_us_per_req"] for r in runs if r.get("cpu_us_per_req") is not None]
    out["cpu_us_per_req"] = med(cpu) if cpu else None
    return out
