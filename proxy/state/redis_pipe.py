"""EVALSHA on a connection of its own, pipelined: the request path's Redis calls.

Every request on the Redis backend runs a few Lua scripts (rate limits, budget
reserve and settle). Through redis-py each call takes a pooled connection, its
own write and read and several coroutine layers: measured ~70 µs of CPU a call.
Here every script call issued in one turn of the event loop goes out in one
write on one connection, and replies come back in order (Redis answers a
connection's commands in the order it received them), so a call costs a few
microseconds of packing and parsing and the socket is written once a turn.

The replies are RESP2: integers, bulk strings (bytes), arrays, nil and errors,
as redis-py returns them. A script Redis does not know (a restart, SCRIPT FLUSH)
is sent once with EVAL and later calls use EVALSHA again. A call the caller
cancels still has its reply read (and dropped), so the order never slips. When
the connection fails, every call waiting on it fails with redis-py's
ConnectionError and the next call connects again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from urllib.parse import urlparse

from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

CONNECT_TIMEOUT_S = 0.5


class ScriptPipe:
    """Lua scripts by name over one pipelined connection (`redis://` URLs only)."""

    def __init__(self, url: str, scripts: dict[str, str]) -> None:
        # redis-py's own reading of the URL (it also takes `db` and `password` from the
        # query string), so the scripts reach the database the other commands reach
        parts = parse_url(url)
        self._host = parts.get("host") or "127.0.0.1"
        self._port = int(parts.get("port") or 6379)
        password = parts.get("password")
        self._auth = [a for a in (parts.get("username"), password) if a] if password else []
        self._db = int(parts.get("db") or 0)
        self._source = {name: src.encode() for name, src in scripts.items()}
        self._sha = {name: hashlib.sha1(src).hexdigest().encode()
                     for name, src in self._source.items()}
        self._known: set[str] = set()  # scripts Redis confirmed it has (EVALSHA worked)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    @staticmethod
    def handles(url: str) -> bool:
        """Plain TCP only; TLS, unix sockets and the rest stay with redis-py."""
        return urlparse(url).scheme == "redis"

    async def run(self, name: str, keys: list, args: list) -> object:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        verb, script = (b"EVALSHA", self._sha[name]) if name in self._known else \
            (b"EVAL", self._source[name])
        try:
            reply = await protocol.call((verb, script, str(len(keys)).encode(), *keys, *args))
        except NoScriptError:
            self._known.discard(name)
            reply = await protocol.call((b"EVAL", self._source[name], str(len(keys)).encode(),
                                         *keys, *args))
        self._known.add(name)
        return reply

    async def _connect(self) -> "_Protocol":
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> "_Protocol":
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, protocol = await loop.create_connection(_Protocol, self._host, self._port)
                try:
                    setup = []
                    if self._auth:
                        setup.append(protocol.call((b"AUTH", *(a.encode()
                                                              for a in self._auth))))
                    if self._db:
                        setup.append(protocol.call((b"SELECT", str(self._db).encode())))
                    for reply in setup:
                        await reply  # a refused password: ResponseError (never echoed)
                except BaseException:
                    protocol.fail(RedisConnectionError("closed during set-up"))
                    for reply in setup:  # retrieved: not logged as "never retrieved"
                        if reply.done() and not reply.cancelled():
                            reply.exception()
                    raise
        except (OSError, asyncio.TimeoutError) as exc:
            raise RedisConnectionError(f"Error connecting to {self._host}:{self._port}: "
                                       f"{exc!r}") from None
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("closed"))
            self._protocol = None


def _pack(parts: tuple) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if not isinstance(part, bytes):
            part = part.encode() if isinstance(part, str) else repr(part).encode() \
                if isinstance(part, float) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[asyncio.Future] = deque()
        self._out: list[bytes] = []
        self._buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def call(self, parts: tuple) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.closed:
            future.set_exception(RedisConnectionError("Connection closed by server."))
            return future
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(_pack(parts))
        self._waiting.append(future)
        return future

    def _flush(self) -> None:
        if self._out and not self.closed and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        buffer, at = self._buffer, 0
        try:
            while self._waiting:
                parsed = _parse(buffer, at)
                if parsed is None:
                    break
                value, at = parsed
                future = self._waiting.popleft()
                if not future.done():  # (a cancelled caller: its reply is dropped)
                    if isinstance(value, ResponseError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except ValueError as exc:  # not RESP: nothing after this can be trusted
            self.fail(RedisConnectionError(f"Protocol error from Redis: {exc}"))
            return
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection closed by server. {exc or ''}".strip()))

    def fail(self, error: Exception) -> None:
        self.closed = True
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.close()


def _parse(buffer: bytearray, at: int) -> tuple[object, int] | None:
    """One reply from `buffer[at:]` and where the next begins; None: not all here yet."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        return None
    kind, line = buffer[at], bytes(buffer[at + 1:end])
    at = end + 2
    if kind == 58:  # ':'
        return int(line), at
    if kind == 36:  # '$'
        size = int(line)
        if size < 0:
            return None, at
        if len(buffer) < at + size + 2:
            return None
        return bytes(buffer[at:at + size]), at + size + 2
    if kind == 42:  # '*'
        count = int(line)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            parsed = _parse(buffer, at)
            if parsed is None:
                return None
            item, at = parsed
            items.append(item)
        return items, at
    if kind == 43:  # '+'
        return line, at
    if kind == 45:  # '-'
        text = line.decode(errors="replace")
        return (NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)), at
    raise ValueError(f"unexpected reply type {chr(kind)!r}")
