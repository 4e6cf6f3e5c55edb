"""The one object the aiohttp app holds: the Gateway generation now serving.

`app[GATEWAY]` is a `Live`. The app's middleware pins each request to the
generation that is current when the request arrives (`enter`), and everything
the request reads through `app[GATEWAY]` — its handler, the pipeline, the
admin routes — comes from that generation until the request ends, however many
reloads happen meanwhile: an in-flight stream finishes on the config, targets
and connections it started with. A reload (proxy/server/reload.py) swaps
`current` in one assignment; the previous generation retires once its last
request has ended, closing only what the new one did not take over.

Outside a request (tests, the CLI's start-up lines) `app[GATEWAY]` reads the
current generation.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar, Token
from typing import Any, AsyncIterator

from aiohttp import web

from proxy.server.gateway import Gateway

log = logging.getLogger("gatewise")
#: after this long, a generation still serving requests says so in the log (it keeps
#: waiting for them: a stream may run for many minutes and is never cut by a reload)
RETIRE_NOTE_S = 60.0


class Live:
    __slots__ = ("current", "reloader", "peers", "host", "_pinned", "_retiring", "_tasks")

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway
        self.reloader: Any = None  # proxy/server/reload.py, set by the app
        self.peers: Any = None  # the other workers' metrics (peers.py), set by serve.py
        self.host: str | None = None  # the address served (`--host`), set by the CLI
        self._pinned: ContextVar[Gateway | None] = ContextVar("gatewise_generation",
                                                               default=None)
        self._retiring: dict[Gateway, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()

    def __getattr__(self, name: str) -> Any:
        """Any Gateway attribute, of the generation this request started on."""
        return getattr(self._pinned.get() or self.current, name)

    # What every request reads, forwarded without the failed lookup `__getattr__`
    # costs first (about 0.7 µs each on the hot path).
    @property
    def config(self) -> Any:
        return (self._pinned.get() or self.current).config

    @property
    def pipeline(self) -> Any:
        return (self._pinned.get() or self.current).pipeline

    @property
    def authenticate(self) -> Any:
        return (self._pinned.get() or self.current).authenticate

    @property
    def pinned(self) -> Gateway:
        """The Gateway this request is pinned to (the current one outside a request)."""
        return self._pinned.get() or self.current

    @property
    def in_flight(self) -> int:
        """Data-plane requests being served, on every generation still serving some."""
        count = self.current.in_flight
        if self._retiring:  # (only while a reload's old generation drains)
            count += sum(g.in_flight for g in self._retiring)
        return count

    @property
    def open(self) -> dict:
        """Requests inside a pipeline, of every generation (a shutdown ends them all)."""
        found = dict(self.current.open)
        for generation in self._retiring:
            found.update(generation.open)
        return found

    def interrupt(self, error: Any) -> int:
        """End every request still in a pipeline, whichever generation it runs on."""
        return sum(g.interrupt(error) for g in [self.current, *self._retiring])

    def enter(self) -> tuple[Gateway, Token]:
        """A request arrives: pin it to the current generation."""
        generation = self.current
        generation.requests += 1
        return generation, self._pinned.set(generation)

    def leave(self, generation: Gateway, token: Token) -> None:
        self._pinned.reset(token)
        generation.requests -= 1
        if not generation.requests:
            idle = self._retiring.get(generation)
            if idle is not None:
                idle.set()

    def swap(self, new: Gateway) -> Gateway:
        """Make `new` current; the previous generation retires after its last request."""
        old, self.current = self.current, new
        idle = self._retiring[old] = asyncio.Event()
        if not old.requests:
            idle.set()
        task = asyncio.get_running_loop().create_task(self._retire(old, idle),
                                                      name="gatewise-retire")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return old

    async def _retire(self, old: Gateway, idle: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(idle.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=RETIRE_NOTE_S)
            if not done:
                log.info(f"config generation {old.generation}: {old.requests} request(s) "
                         f"still running {RETIRE_NOTE_S:g}s after a reload; its connections "
                         "close after the last one")
                await waiter
        finally:
            waiter.cancel()
        self._retiring.pop(old, None)  # (cancelled before here: the lifespan retires it)
        try:
            await old.retire(self.serving())
        except Exception:  # noqa: BLE001 — a retiring generation must not break serving
            log.exception(f"config generation {old.generation}: retiring failed")

    def serving(self) -> list[Gateway]:
        """Every generation that may still use its transports: the current one and
        those retiring."""
        return [self.current, *self._retiring]

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        """A background task the app's lifespan cancels at shutdown."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutting_down(self, app: web.Application) -> None:
        """Requests cancelled from here on were not abandoned by their clients."""
        for generation in self.serving():
            await generation._shutting_down(app)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        app.on_shutdown.append(self._shutting_down)
        try:
            await self.current.start(app)
            if self.peers is not None:
                await self.peers.start()
        except BaseException:
            await self.current.close()
            raise
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            retiring = list(self._retiring)  # their requests are over: the server stopped
            self._retiring.clear()
            for old in retiring:
                await old.retire([self.current])
            if self.peers is not None:
                await self.peers.stop()
            await self.current.close()
