"""Outbound HTTP to upstreams: one connection pool per provider.

Each provider's pool holds at most `max_connections` connections, and a
`ConnectionGate` hands them out in arrival order. The dispatcher takes a slot
before an attempt's clock starts, so waiting for one is the gateway's own time:
it never counts against the first-token deadline, never as an upstream
failure, never towards a circuit breaker. No total timeout applies to streams (aiohttp's default of 300 s would cut long
generations): streams get connect, first-token and idle deadlines from the
dispatcher instead; non-streaming calls get connect and total. aiohttp's
failures become classified `UpstreamError`s here, so callers see one kind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextvars import ContextVar
from typing import AsyncIterator, Mapping

import aiohttp

from proxy.config.types import ProviderConfig, Timeouts
from proxy.core.errors import (GatewayError, upstream_protocol, upstream_timeout,
                               upstream_unreachable)
from translators.base import UpstreamRequest

# The W3C traceparent for the upstream attempt about to be sent, set by tracing
# (policies/tracing.py) for the request's task; None (no header) when tracing is off.
OUTBOUND_TRACEPARENT: ContextVar[str | None] = ContextVar("gatewise_traceparent", default=None)


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """`limit` 0: no cap of aiohttp's own (a provider's gate is the cap)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=30,
                                     enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=True, skip_auto_headers=("User-Agent",),
        json_serialize=None,  # bodies are already bytes
        # One session serves every client: a cookie an upstream sets for one must
        # never go out with another's request (nor cost a jar lookup per request).
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def connections_busy(provider: str, limit: int, waited: float) -> GatewayError:
    return GatewayError(
        503, f"All {limit} upstream connections of provider '{provider}' stayed in use for "
             f"{waited:.3g}s (providers.{provider}.max_connections).", "server_error",
        code="upstream_connections_busy", headers={"retry-after": "1", "x-should-retry": "true"})


class ConnectionGate:
    """At most `limit` requests of one provider upstream at once; the rest wait in
    arrival order, each slot handed straight to the next waiter."""

    __slots__ = ("busy", "limit", "provider", "_waiters")

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self.limit = limit
        self.busy = 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self, timeout: float) -> float:
        """Take a slot; returns the seconds waited (0.0 on the fast path). Waiting
        past `timeout` (the request's deadline) is a 503, not an upstream failure."""
        if self.busy < self.limit and not self._waiters:
            self.busy += 1
            return 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()  # release() skips it
            if isinstance(exc, TimeoutError):
                raise connections_busy(self.provider, self.limit, loop.time() - start) from None
            raise
        return loop.time() - start

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; `busy` stays
                return
        self.busy -= 1


class HttpResponse:
    """The upstream's answer, with reads whose failures are classified."""

    __slots__ = ("_resp", "_provider", "_total", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse, provider: str, total: float = 0.0) -> None:
        self._resp = resp
        self._provider = provider
        self._total = total
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            # Headers came, then the body stalled past the total deadline.
            raise upstream_timeout(self._provider, "total", self._total) from None
        except aiohttp.ClientPayloadError as exc:
            raise upstream_protocol(self._provider, f"the body was cut short ({exc})") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise upstream_protocol(self._provider, f"the connection failed ({exc})") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Whatever each socket read delivered: one write downstream per read."""
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except aiohttp.ClientPayloadError as exc:
            raise upstream_protocol(self._provider, f"the stream was cut short ({exc})") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise upstream_protocol(self._provider, f"the connection failed ({exc})") from None

    async def finish(self) -> None:
        """The stream's grammar has ended: read the last bytes of the HTTP body so
        the connection goes back to the pool, or drop it if the upstream lingers."""
        content = self._resp.content
        if content.at_eof():
            return
        try:
            async with asyncio.timeout(1.0):
                while await content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.close()

    def close(self) -> None:
        """Drop the connection (not back to the pool): used when abandoning a stream."""
        self._resp.close()


class _Opened:
    __slots__ = ("_session", "_request", "_provider", "_timeout", "_phase", "_seconds",
                 "_response")

    def __init__(self, session: aiohttp.ClientSession, request: UpstreamRequest,
                 provider: ProviderConfig, timeout: aiohttp.ClientTimeout) -> None:
        self._session = session
        self._request = request
        self._provider = provider
        self._timeout = timeout
        self._response: HttpResponse | None = None

    async def __aenter__(self) -> HttpResponse:
        req = self._request
        name = self._provider.name
        t = self._provider.timeouts
        headers = req.headers
        traceparent = OUTBOUND_TRACEPARENT.get()
        if traceparent is not None:
            headers = {**headers, "traceparent": traceparent}
        try:
            resp = await self._session.request(req.method, req.url, data=req.body,
                                               headers=headers, timeout=self._timeout,
                                               allow_redirects=False)
        except aiohttp.ConnectionTimeoutError:
            raise upstream_timeout(name, "connect", t.connect) from None
        except aiohttp.ClientConnectorError as exc:
            raise upstream_unreachable(name, _reason(exc)) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise upstream_timeout(name, "total", t.total) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise upstream_protocol(name, f"the connection failed ({_reason(exc)})") from None
        self._response = HttpResponse(resp, name, t.total)
        return self._response

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._response is not None:
            if exc_type is None:
                self._response._resp.release()
            else:
                self._response.close()


def _reason(exc: BaseException) -> str:
    """aiohttp's text without anything that might echo request headers."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{exc.host}:{exc.port} {exc.os_error.strerror or type(exc.os_error).__name__}"
    return type(exc).__name__


class HttpTransport:
    """Sends translated requests for one provider over its own connection pool."""

    def __init__(self, provider: ProviderConfig,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._session = session or new_session(provider.max_connections)
        self._provider = provider
        self.gate = ConnectionGate(provider.name, provider.max_connections)
        self.acquire = self.gate.acquire
        self.release = self.gate.release
        t: Timeouts = provider.timeouts
        # sock_connect bounds a new connection; waiting for a pooled one is not timed
        # separately (`connect` would add a second timer to every request).
        self._json_timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect)

    def open(self, request: UpstreamRequest, timeouts: Timeouts) -> _Opened:
        timeout = self._stream_timeout if request.stream else self._json_timeout
        return _Opened(self._session, request, self._provider, timeout)

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        await self._session.close()
