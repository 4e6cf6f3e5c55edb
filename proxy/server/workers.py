"""`gatewise serve --workers N`: N processes serving one port (SO_REUSEPORT).

The kernel spreads new connections over the processes. Each is a plain
`gatewise serve --reuse-port`, so they share nothing in memory: limits and
budgets only hold across them through the shared state (`state.backend:
redis`), which is why the memory backend refuses N > 1. The parent only
supervises. Workers run in their own process group, so a terminal's Ctrl-C
reaches the supervisor alone and each worker hears one signal: SIGINT/SIGTERM
are forwarded (the workers drain), a second one too (they exit at once).
SIGHUP is forwarded too: every worker reloads its config and logs its result. When one worker dies the supervisor stops the
others and exits with that worker's status (let systemd/Kubernetes restart);
when the supervisor dies, the workers drain and exit (proxy/server/serve.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from proxy.config.types import GatewayConfig


def refusal(config: GatewayConfig, workers: int) -> str | None:
    """Why N workers cannot run with this config (None: they can)."""
    if workers > 1 and config.state.backend == "memory":
        return (f"--workers {workers} needs shared state: with state.backend: memory each "
                f"worker would keep its own rate limits, budgets and cache, admitting up to "
                f"{workers}x every limit. Set state: {{backend: redis, url: redis://…, "
                f"instances: N}} (and a postgresql:// ledger), or run one worker.")
    if workers > 1 and not hasattr(__import__("socket"), "SO_REUSEPORT"):
        return "--workers needs SO_REUSEPORT, which this platform does not have"
    return None


def run(config_path: str, host: str, port: int, workers: int, watch: bool = False) -> int:
    from proxy.server.peers import METRICS_DIR_ENV
    from proxy.server.serve import SUPERVISOR_ENV

    cmd = [sys.executable, "-m", "proxy", "serve", "--config", config_path, "--host", host,
           "--port", str(port), "--reuse-port"] + (["--watch"] if watch else [])
    metrics_dir = tempfile.mkdtemp(prefix="gatewise-metrics-")  # mode 0700
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid()), METRICS_DIR_ENV: metrics_dir}
    try:
        return _supervise(cmd, env, workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(cmd: list[str], env: dict[str, str], workers: int) -> int:
    # Workers start with SIGHUP ignored (kept across exec) until `gatewise serve` takes it
    # on its first lines: a reload asked while one is still importing is lost, not fatal.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        children = [subprocess.Popen(cmd, env={**env, "GATEWISE_WORKER": str(i)},
                                     process_group=0) for i in range(workers)]
    finally:
        signal.signal(signal.SIGHUP, previous)
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def reload_all(signum, _frame) -> None:
        """SIGHUP: every worker reloads its config (each answers for itself in the log)."""
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload_all)
    status = 0
    while children:
        for child in list(children):
            code = child.poll()
            if code is None:
                continue
            children.remove(child)
            if not stopping:  # a worker died on its own: stop the rest
                status = code or 1
                print(f"gatewise: worker {child.pid} exited with {code}: stopping",
                      file=sys.stderr)
                forward(signal.SIGTERM, None)
            elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
                status = status or code
        time.sleep(0.1)
    return status
