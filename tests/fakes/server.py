"""Running an aiohttp app on a loopback port for the length of a test."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


async def read_request(request: web.Request) -> tuple[dict[str, str], Any]:
    """What every fake records: lower-cased headers, and the body parsed as JSON (the
    raw bytes when it is not JSON, so the fake can answer the API's own parse error)."""
    raw = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        return headers, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return headers, raw


class LoopbackServer:
    """Serves `app` on 127.0.0.1 at a free port; `url` is its base URL."""

    def __init__(self, app: web.Application, **runner_kwargs) -> None:
        self.app = app
        self._runner = web.AppRunner(app, access_log=None, **runner_kwargs)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "LoopbackServer":
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> "LoopbackServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
