"""One upstream stream relayed to the client, held back until its first content.

A stream is held back until its first content chunk, so a failure (or the
first-token deadline) before that raises and the dispatcher can fall back
while the client still sees one clean stream; after it, a failure ends the
stream with an error event and no end marker. Each upstream read becomes at
most one write to the client: a read is turned into bytes by `_read`, which
either translates its events or, for an OpenAI-format upstream and an OpenAI
client, passes the plain events through as the upstream's own bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.core.errors import GatewayError, UpstreamError, upstream_protocol, upstream_timeout
from proxy.core.exchange import Attempt, Exchange
from proxy.core.framing import Event, new_framer
from proxy.core.sse import DONE, SSE_HEADERS, encode_frames, error_frame
from proxy.engine.relay import UNEXPECTED_SHAPE, malformed

from translators.base import Translator

if TYPE_CHECKING:
    from proxy.config.types import ProviderConfig

log = logging.getLogger("gatewise")


class StreamRelay:
    """The state of one attempt's stream: the framer, what is held back, the client."""

    __slots__ = ("attempt", "client", "encode", "ex", "framer", "passthrough", "pending",
                 "provider", "state", "translator", "unsent")

    def __init__(self, ex: Exchange, attempt: Attempt, translator: "Translator",
                 provider: "ProviderConfig") -> None:
        self.ex = ex
        self.attempt = attempt
        self.translator = translator
        self.provider = provider
        self.framer = new_framer(translator.framing)
        self.state = translator.state
        self.pending: list[bytes] = []  # chunks held back until the first content
        self.client: web.StreamResponse | None = None
        self.unsent = b""  # passed-through bytes of the read an error event ended
        egress = ex.egress  # the client's wire format; None: OpenAI chat as is
        self.encode = egress.frames if egress is not None else encode_frames
        # Only a translator that can pass events untouched gets whole raw events;
        # the others translate each read at once.
        self.passthrough = translator.passthrough \
            if translator.framing == "sse" and egress is None \
            and type(translator).passthrough is not Translator.passthrough else None

    async def run(self, transport: Any, request: Any, first_token: float) -> None:
        """`first_token`: the provider's first-token timeout, or less if the request's
        deadline is nearer. A failure after the commit is recorded on the attempt."""
        try:
            async with asyncio.timeout(first_token) as deadline:
                try:
                    await self._relay(transport, request, deadline)
                except BaseException:
                    if self.client is None:  # the attempt's whole time was the upstream's
                        self.ex.upstream_ns += time.perf_counter_ns() - self.attempt.started_ns
                    raise
        except TimeoutError:
            committed = self.client is not None
            err = upstream_timeout(self.provider.name,
                                   "idle stream" if committed else "first token",
                                   self.provider.timeouts.idle if committed
                                   else round(first_token, 3))
            if not committed:
                raise err from None
            await self._fail(err)
        except UpstreamError as err:
            await self._upstream_failed(err)
        except (ConnectionResetError, asyncio.CancelledError):
            interrupt = self.ex.interrupt
            if interrupt is not None and self.client is not None:
                # The gateway ends the stream (the shutdown deadline): the client reads
                # why in the wire format it asked for, and what was generated is billed.
                asyncio.current_task().uncancel()
                self.ex.error = interrupt
                self._bill_partial()
                await self._write_quietly(self._error_bytes(interrupt))
                return
            # The client went away (or stopped reading): the upstream request was closed
            # on the way out.
            self.ex.status = 499
            self._bill_partial()
            raise
        except Exception:
            if self.client is None:
                raise  # nothing sent yet: the middleware answers a clean 500
            # A fault of the gateway's own after the stream began: the client still
            # gets a clean end (an error event, no end marker), and what the upstream
            # billed is still recorded.
            ex = self.ex
            log.exception("stream relay failed", extra={"request_id": ex.request_id})
            ex.error = GatewayError(500, f"The gateway hit an internal error mid-stream "
                                    f"(request id {ex.request_id}).", "server_error",
                                    code="gateway_internal_error")
            self._bill_partial()
            await self._write_quietly(self._error_bytes(ex.error))

    async def _relay(self, transport: Any, request: Any, deadline: asyncio.Timeout) -> None:
        timeouts = self.provider.timeouts
        loop = asyncio.get_running_loop()
        # Before the commit the deadline is the first token; afterwards it slides with
        # each read (lazily, at most every `step` seconds, never firing early).
        idle = timeouts.idle
        step = min(1.0, idle / 10)
        step_ns = int(step * 1e9)  # (on the `clock` below: one clock read per read)
        next_slide = 0
        state = self.state
        ex = self.ex
        # After the commit, each wait for the upstream's next read is the upstream's
        # time, not the gateway's (`mark`: when the last read was handled).
        clock = time.perf_counter_ns
        mark = 0
        http = ex.http
        async with transport.open(request, timeouts) as resp:
            self.attempt.status = resp.status
            if resp.status >= 400:
                raise self.translator.error(resp.status, resp.headers, await resp.read())
            chunks = resp.iter_chunks()
            async for raw in chunks:
                if mark:
                    ex.upstream_ns += clock() - mark
                if self.client is not None:
                    data = self._committed(raw)
                else:
                    data = await self._read(raw)
                    if data is None:
                        continue  # still held back
                if state.complete:
                    await self._send(data + self._done())
                    mark = clock()
                    await chunks.aclose()  # now, not by a task the loop makes for it
                    await resp.finish()
                    ex.upstream_ns += clock() - mark
                    return
                if data:  # `_send`, its common case inline: a client that keeps up
                    sock = http.transport
                    if sock is None or not (sock.get_write_buffer_size() or len(data) > 16384):
                        await self.client.write(data)
                    else:
                        await self._send(data)
                mark = clock()
                if mark >= next_slide:
                    deadline.reschedule(loop.time() + idle + step)
                    next_slide = mark + step_ns
            if mark:
                ex.upstream_ns += clock() - mark
            out = self._translate(self.framer.flush())
            try:
                out += self.translator.end_of_stream()
            except UNEXPECTED_SHAPE as exc:
                raise malformed(self.provider.name, exc, self.ex.request_id) from None
            if not state.complete:
                raise upstream_protocol(self.provider.name,
                                        "the stream ended before it was complete")
            if self.client is None:
                await self._commit()
                out = self.pending + out
            self._tap(out)
            await self._send(self.encode(out) + self._done())

    async def _send(self, data: bytes) -> None:
        """Write to the client. A write can only block when the connection already holds
        unsent bytes or the data alone passes the transport's high-water mark (64 KiB),
        so only such a write is timed (`timeouts.client_write`): a client that stops
        reading is cut off, never left holding the upstream open, and a client that
        keeps up costs no timer."""
        transport = self.ex.http.transport
        if transport is None or not (transport.get_write_buffer_size() or len(data) > 16384):
            await self.client.write(data)
            return
        limit = self.provider.timeouts.client_write
        try:
            async with asyncio.timeout(limit):
                await self.client.write(data)
        except TimeoutError:
            ex = self.ex
            log.warning(f"client accepted no write for {limit:g}s: disconnected",
                        extra={"request_id": ex.request_id})
            ex.error = GatewayError(408, f"The client accepted no data for {limit:g}s "
                                    "(timeouts.client_write).", "invalid_request_error",
                                    code="client_write_timeout")
            transport.abort()
            raise ConnectionResetError("client write timeout") from None

    def _committed(self, raw: bytes) -> bytes:
        """One upstream read of a committed stream → the bytes to write: the plain
        events as the upstream's own bytes where the translator can pass them, the
        rest translated."""
        block = self.framer.split_complete(raw) \
            if self.passthrough is not None and self.ex.stream_tap is None else None
        if block is None:
            out = self._translate(self.framer.feed(raw))
            self._tap(out)
            return self.encode(out)
        fast, used = self.passthrough(block)
        if used == len(block):
            return fast
        try:
            out = self._translate(self.framer.parse_complete(block[used:]))
        except UpstreamError:
            self.unsent = fast  # what came before the error goes first
            raise
        return fast + self.encode(out) if out else fast

    async def _read(self, raw: bytes) -> bytes | None:
        """One upstream read before the commit → the bytes to write, or None while the
        stream is held."""
        block = self.framer.split_complete(raw) \
            if self.passthrough is not None and self.ex.stream_tap is None else None
        if block is None:
            self.pending += self._translate(self.framer.feed(raw))
            if not self._ready():
                return None
            await self._commit()
            self._tap(self.pending)
            return self.encode(self.pending)
        # Whole events as raw bytes: translate one by one up to the first content
        # (the commit point), then let the translator pass the plain events that
        # follow as the upstream's own bytes, and translate only what is left
        # (finish, usage, the end).
        head = 0
        while head < len(block) and not self._ready():
            end = block.index(b"\n\n", head) + 2
            self.pending += self._translate(self.framer.parse_complete(block[head:end]))
            head = end
        if not self._ready():
            return None
        await self._commit()
        prefix = self.encode(self.pending)
        fast, used = self.passthrough(block[head:])
        if head + used == len(block):
            return prefix + fast
        try:
            out = self._translate(self.framer.parse_complete(block[head + used:]))
        except UpstreamError:
            self.unsent = prefix + fast  # what came before the error goes first
            raise
        return prefix + fast + self.encode(out) if out else prefix + fast

    def _ready(self) -> bool:
        return self.state.has_content or self.state.complete

    def _translate(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        ex = self.ex
        for event in events:
            try:
                chunks, usage = self.translator.stream(event)
            except UpstreamError as err:
                err.partial = out  # this read's chunks before the error
                raise
            except UNEXPECTED_SHAPE as exc:
                err = malformed(self.provider.name, exc, ex.request_id)
                err.partial = out
                raise err from None
            if usage is not None:
                ex.usage = usage
            if chunks:
                out += chunks
        return out

    def _tap(self, out: list[bytes]) -> None:
        if self.ex.stream_tap is not None and out:
            self.ex.stream_tap(out)

    async def _commit(self) -> None:
        ex, attempt = self.ex, self.attempt
        now = time.perf_counter_ns()
        attempt.first_token_ns = now
        ex.upstream_ns += now - attempt.started_ns
        ex.target = attempt.target
        ex.status = 200
        response = web.StreamResponse(status=200, headers={**SSE_HEADERS,
                                                           **ex.gateway_headers()})
        await response.prepare(ex.http)
        ex.response = self.client = response

    async def _upstream_failed(self, err: UpstreamError) -> None:
        # Chunks that arrived in the same read as the error still go out first, so
        # what the client sees does not depend on where the upstream's reads split.
        partial = err.partial or []
        if self.client is None:
            if not self.state.has_content:
                raise err
            partial = self.pending + partial
            await self._commit()
        if partial:
            self._tap(partial)
        data = self.unsent + self.encode(partial) if partial else self.unsent
        if data:
            await self._write_quietly(data)
        await self._fail(err)

    async def _fail(self, err: UpstreamError) -> None:
        self.attempt.error_class = err.error_class
        self.ex.error = err
        self._bill_partial()
        await self._write_quietly(self._error_bytes(err))

    def _bill_partial(self) -> None:
        if self.ex.usage is None:
            self.ex.usage = self.translator.partial_usage()

    def _done(self) -> bytes:
        egress = self.ex.egress
        return DONE if egress is None else egress.done(self.ex.usage)

    def _error_bytes(self, err: GatewayError) -> bytes:
        egress = self.ex.egress
        return error_frame(err) if egress is None else egress.error(err)

    async def _write_quietly(self, data: bytes) -> None:
        try:
            await self.client.write(data)
        except ConnectionResetError:
            pass
