"""A scriptable fault mode for any fake upstream (an aiohttp app).

    faults = Faults().attach(fake.app)        # before the app starts
    faults.fail(2, 503, headers={"retry-after-ms": "50"})  # next 2 requests
    faults.stall(0.5)                          # next request: 0.5 s before the first byte
    faults.drop_after(3)                       # next request: cut after 3 body writes
    faults.slow(0.05, times=None)              # every request: 50 ms before each write

Faults apply in the order scripted, one per request (`times` requests each,
None for every request from then on). A failure answers in OpenAI's error
envelope unless `body` says otherwise, so the fake's own validation still
runs for every request that is not failed. `seen` counts requests per path.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_KEY = web.RequestKey("gatewise_fault", object)
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                404: "invalid_request_error", 408: "timeout", 429: "rate_limit_exceeded"}


@dataclass
class Fault:
    status: int | None = None  # answer this status instead of the fake's reply
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # dict/bytes; default: an OpenAI error envelope
    stall: float = 0.0  # seconds before the first byte
    drop_after: int | None = None  # cut the connection after this many body writes
    slow: float = 0.0  # seconds before each body write
    times: int | None = 1  # how many requests this fault applies to; None: forever


class Faults:
    def __init__(self, paths: tuple[str, ...] = ("/v1/chat/completions", "/chat/completions")):
        self.paths = paths
        self.queue: deque[Fault] = deque()
        self.seen: Counter[str] = Counter()
        self.log: list[int | None] = []  # the status a fault forced per request (None: none)

    def attach(self, app: web.Application) -> "Faults":
        app.middlewares.append(self._middleware)
        app.on_response_prepare.append(self._on_prepare)
        return self

    # --- scripting -----------------------------------------------------------------

    def add(self, fault: Fault) -> "Faults":
        self.queue.append(fault)
        return self

    def fail(self, times: int | None, status: int, headers: dict[str, str] | None = None,
             body: Any = None) -> "Faults":
        return self.add(Fault(status=status, headers=dict(headers or {}), body=body, times=times))

    def stall(self, seconds: float, times: int | None = 1) -> "Faults":
        return self.add(Fault(stall=seconds, times=times))

    def drop_after(self, writes: int, times: int | None = 1) -> "Faults":
        return self.add(Fault(drop_after=writes, times=times))

    def slow(self, seconds: float, times: int | None = 1) -> "Faults":
        return self.add(Fault(slow=seconds, stall=seconds, times=times))

    def clear(self) -> None:
        self.queue.clear()

    def _next(self) -> Fault | None:
        if not self.queue:
            return None
        fault = self.queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.queue.popleft()
        return fault

    # --- applying ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        self.seen[request.path] += 1
        fault = self._next() if request.path in self.paths else None
        self.log.append(fault.status if fault else None)
        if fault is None:
            return await handler(request)
        if fault.stall:
            await asyncio.sleep(fault.stall)
        if fault.status is not None:
            await request.read()
            return _failure(fault)
        request[_KEY] = fault
        return await handler(request)

    @staticmethod
    async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        fault = request.get(_KEY)
        if fault is not None and (fault.drop_after is not None or fault.slow):
            _wrap_writes(response, request, fault)


def _failure(fault: Fault) -> web.Response:
    body = fault.body
    if body is None:
        status = fault.status or 500
        body = {"error": {"message": f"fake upstream fault: HTTP {status}",
                          "type": _ERROR_TYPES.get(status, "server_error"),
                          "param": None, "code": None}}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(status=fault.status or 500, body=data,
                        headers={"content-type": "application/json", **fault.headers})


def _wrap_writes(response: web.StreamResponse, request: web.Request, fault: Fault) -> None:
    """Count (and slow) the body writes of the response the fake's handler prepared."""
    original = response.write
    writes = 0

    async def write(data: bytes) -> None:
        nonlocal writes
        if fault.drop_after is not None and writes >= fault.drop_after:
            request.transport.close()  # mid-body: the chunked stream is incomplete
            raise ConnectionResetError("fault: connection dropped")
        writes += 1
        if fault.slow:
            await asyncio.sleep(fault.slow)
        await original(data)

    response.write = write  # type: ignore[method-assign]


async def start_faulty_openai(stack: "list", **kwargs: Any) -> tuple[Any, Faults, Any]:
    """A FakeOpenAI with `Faults` attached, running on loopback; appended to `stack`
    (close each with `await server.close()`). Returns (fake, faults, server)."""
    from tests.fakes.openai_upstream import FakeOpenAI
    from tests.fakes.server import LoopbackServer

    fake = FakeOpenAI(**kwargs)
    faults = Faults().attach(fake.app)
    server = LoopbackServer(fake.app, handler_cancellation=True)
    await server.start()
    stack.append(server)
    return fake, faults, server
