"""A webhook receiver that records each delivery exactly as it arrived, and can
be told to hang, redirect or fail."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """What a receiver does: HMAC-SHA256 over the raw body, compared in constant time."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-gatewise-signature", ""))


@dataclass
class Receiver:
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answer these first, then 200
    hang: float = 0.0  # seconds before answering
    redirect: bool = False  # answer 302 to /moved
    moved: int = 0  # requests that reached /moved
    app: web.Application = field(default_factory=web.Application)

    def __post_init__(self) -> None:
        self.app.router.add_post("/hook", self._hook)
        self.app.router.add_route("*", "/moved", self._moved)
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()  # set it to end every hang at once

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.deliveries.append(Delivery(request.path, {k.lower(): v for k, v in
                                                       request.headers.items()}, body))
        self.arrived.set()
        if self.hang:
            try:
                await asyncio.wait_for(self.release.wait(), self.hang)
            except TimeoutError:
                pass
        if self.redirect:
            return web.Response(status=302, headers={"location": "/moved"})
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), text="no")
        return web.Response(text="ok")

    async def _moved(self, request: web.Request) -> web.Response:
        self.moved += 1
        return web.Response(text="followed")

    def of(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.json.get("event") == kind]

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.deliveries) < count:
                self.arrived.clear()
                await self.arrived.wait()
