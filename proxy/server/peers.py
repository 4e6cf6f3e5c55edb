"""`/metrics` under `gatewise serve --workers N`: the sum over every worker.

Without this, a scrape got whichever worker the kernel handed the connection
to, and Prometheus read the jumps between workers as counter resets. Each
worker also listens on a unix socket of its own in the directory its
supervisor names (`GATEWISE_METRICS_DIR`, private to the supervisor's user)
and answers `GET /snapshot` with its series. The worker a scrape lands on asks
every other one, concurrently, and renders the sum: counters and histograms
add up, requests in flight add up, the breaker gauge shows the worst state
any worker sees. Between scrapes this costs nothing.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from policies.metrics import CONTENT_TYPE

METRICS_DIR_ENV = "GATEWISE_METRICS_DIR"
_ASK_TIMEOUT_S = 2.0


class Peers:
    def __init__(self, metrics: Any, directory: str) -> None:
        self.metrics = metrics
        self.dir = Path(directory)
        self.own = self.dir / f"worker-{os.getpid()}.sock"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/snapshot", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.own)).start()
        os.chmod(self.own, 0o600)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.own.unlink(missing_ok=True)

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.metrics.snapshot()),
                            content_type="application/json")

    async def _ask(self, path: Path) -> dict | None:
        """A worker's snapshot, or None when it is gone (its socket left behind)."""
        try:
            async with asyncio.timeout(_ASK_TIMEOUT_S), aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(path))) as http, \
                    http.get("http://worker/snapshot") as resp:
                return orjson.loads(await resp.read()) if resp.status == 200 else None
        except (OSError, aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics: this worker's series plus every other worker's."""
        others = [p for p in self.dir.glob("worker-*.sock") if p != self.own]
        snapshots = [s for s in await asyncio.gather(*(self._ask(p) for p in others))
                     if s is not None]
        return web.Response(body=self.metrics.render(snapshots),
                            headers={"content-type": CONTENT_TYPE})
