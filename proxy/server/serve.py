"""Running one gatewise process: listen, drain on a signal, stop.

SIGTERM or SIGINT starts a drain: the listeners close at once (a load balancer
sees refused connections and moves on), idle keep-alive connections are
closed, and requests in flight get `server.shutdown_timeout` to finish. At the
deadline every request still open is ended by the gateway: a stream gets a
last `server_shutting_down` error event in its client's wire format, anything
else a 503; each one's usage is billed and its ledger row settled before the
process exits. The drain's start and end are logged with their counts. A
second signal exits at once, with one log line and no traceback. SIGHUP
reloads the config (proxy/server/reload.py): it never kills the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from typing import Any, Callable

from aiohttp import web

from proxy.core.errors import GatewayError
from proxy.server.gateway import GATEWAY
from proxy.server.peers import METRICS_DIR_ENV, Peers

log = logging.getLogger("gatewise")
#: how long requests cut at the deadline get to write their last event
_CUT_GRACE_S = 2.0
#: the supervisor's pid, set for each worker of `gatewise serve --workers N`
SUPERVISOR_ENV = "GATEWISE_SUPERVISOR"


def shutting_down() -> GatewayError:
    return GatewayError(503, "The gateway is shutting down; retry the request.", "server_error",
                        code="server_shutting_down",
                        headers={"retry-after": "1", "x-should-retry": "true"})


def raise_fd_limit() -> int:
    """Thousands of streams need two descriptors each (client and upstream): lift the
    soft limit to the hard one. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def run(app: web.Application, host: str, port: int, *, reuse_port: bool = False,
        admin: tuple[web.Application, str, int] | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        hangup: Callable[[], None] | None = None) -> int:
    """Serve until a signal; returns the exit status. `hangup` is called on SIGHUP."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(app, host, port, reuse_port, admin, hangup))


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool,
                 admin: tuple[web.Application, str, int] | None,
                 hangup: Callable[[], None] | None = None) -> int:
    gateway = app[GATEWAY]
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    if metrics_dir and os.path.isdir(metrics_dir):  # a worker: /metrics sums over all
        gateway.peers = Peers(gateway.metrics, metrics_dir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            stop.set()
            return
        # The second signal: out at once, quietly (no traceback, no more waiting).
        log.warning(f"{signal.Signals(signum).name} again: exiting now, "
                    f"{gateway.in_flight} request(s) cut")
        logging.shutdown()
        os._exit(128 + signum)

    if hangup is not None and hasattr(signal, "SIGHUP"):
        # First: the loop's signal pipe starts with this call, and a SIGHUP must not
        # reach both the plain handler and the pipe (two reloads for one signal).
        loop.add_signal_handler(signal.SIGHUP, hangup)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    watchdog = _watch_supervisor(loop)
    runners = [web.AppRunner(app, access_log=None, handler_cancellation=True,
                             shutdown_timeout=_CUT_GRACE_S)]
    await runners[0].setup()
    try:
        sites = [web.TCPSite(runners[0], host, port, reuse_port=reuse_port or None,
                             backlog=4096)]
        await sites[0].start()
        if admin is not None:
            admin_app, admin_host, admin_port = admin
            runners.append(web.AppRunner(admin_app, access_log=None))
            await runners[1].setup()
            sites.append(web.TCPSite(runners[1], admin_host, admin_port))
            await sites[1].start()
        await stop.wait()
        grace = gateway.config.server.shutdown_timeout  # (the config now: a reload may set it)
        await _drain(gateway, sites, runners[0], grace, signal.Signals(received[0]).name)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for runner in reversed(runners):
            await runner.cleanup()  # the gateway's lifespan ends here: ledger, pools, traces
    log.info("gatewise stopped")
    return 0


async def _drain(gateway: Any, sites: list[web.TCPSite], runner: web.AppRunner,
                 grace: float, why: str) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    for site in sites:
        await site.stop()  # no new connections
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close now
    open_at_start = gateway.in_flight
    streams = sum(1 for ex in gateway.open.values() if ex.stream)
    log.info(f"{why}: draining {open_at_start} request(s) in flight ({streams} stream(s)) "
             f"for up to {grace:g}s (server.shutdown_timeout); no longer accepting")
    deadline = began + grace
    while gateway.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.02)
    cut = gateway.interrupt(shutting_down()) if gateway.in_flight else 0
    if cut:
        until = loop.time() + _CUT_GRACE_S
        while gateway.in_flight and loop.time() < until:
            await asyncio.sleep(0.02)
    finished = max(0, open_at_start - cut)
    log.info(f"drained in {loop.time() - began:.1f}s: {finished} request(s) finished, {cut} cut"
             + (" (ended with server_shutting_down)" if cut else ""))


def _watch_supervisor(loop: asyncio.AbstractEventLoop) -> asyncio.Task | None:
    """A worker of `--workers N` drains and exits when its supervisor dies: at once on
    Linux (the kernel's parent-death signal), else within a second."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    async def watch() -> None:
        while True:
            if os.getppid() != int(supervisor):  # re-parented: the supervisor is gone
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(1.0)

    return loop.create_task(watch(), name="gatewise-supervisor-watch")
