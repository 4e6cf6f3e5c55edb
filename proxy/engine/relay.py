"""One upstream attempt's answer relayed to the client: JSON, or a held-back stream.

A stream is held back until its first content chunk, so a failure (or the
first-token deadline) before that raises and the dispatcher can fall back
while the client still sees one clean stream; after it, a failure ends the
stream with `data: {"error": ...}` and no `[DONE]`. Each upstream read
becomes at most one write to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

import orjson
from aiohttp import web

from proxy.core.errors import (
    GatewayError,
    UpstreamError,
    upstream_protocol,
    upstream_timeout,
)
from proxy.core.exchange import Attempt, Exchange
from proxy.core.framing import new_framer
from proxy.core.sse import DONE as _DONE
from proxy.core.sse import SSE_HEADERS as _SSE_HEADERS
from proxy.core.sse import encode_frames, error_frame

log = logging.getLogger("gatewise")

if TYPE_CHECKING:
    from proxy.config.types import ProviderConfig
    from translators.base import Translator

async def relay_json(ex: Exchange, attempt: Attempt, translator: "Translator", transport: Any,
                     request: Any, provider: "ProviderConfig", deadline: float) -> None:
    """`deadline`: seconds left of the request's budget (bounds this attempt too)."""
    try:
        # aiohttp enforces the provider's total timeout; a second timer only when the
        # request's deadline (spent partly by earlier attempts) comes clearly sooner.
        if deadline < provider.timeouts.total - 0.5:
            async with asyncio.timeout(deadline):
                resp, body = await _fetch(transport, request, provider)
        else:
            resp, body = await _fetch(transport, request, provider)
    except TimeoutError:
        raise upstream_timeout(provider.name, "request deadline", round(deadline, 3)) from None
    finally:
        ex.upstream_ns += time.perf_counter_ns() - attempt.started_ns
    attempt.status = resp.status
    if resp.status >= 400:
        raise translator.error(resp.status, resp.headers, body)
    out, usage = translator.response(resp.status, resp.headers, body)
    ex.usage = usage
    ex.target = attempt.target
    ex.status = 200
    ex.response_body = out if isinstance(out, bytes) else orjson.dumps(out)


async def _fetch(transport: Any, request: Any, provider: "ProviderConfig") -> tuple[Any, bytes]:
    async with transport.open(request, provider.timeouts) as resp:
        return resp, await resp.read()


async def relay_stream(ex: Exchange, attempt: Attempt, translator: "Translator", transport: Any,
                       request: Any, provider: "ProviderConfig", first_token: float) -> None:
    """`first_token`: the provider's first-token timeout, or less if the request's
    deadline is nearer. A failure after the commit is recorded on `attempt.error_class`."""
    timeouts = provider.timeouts
    loop = asyncio.get_running_loop()
    framer = new_framer(translator.framing)
    state = translator.state
    pending: list[bytes] = []
    client: web.StreamResponse | None = None
    egress = ex.egress  # the client's wire format; None: OpenAI chat as is
    encode = egress.frames if egress is not None else encode_frames
    # Pre-commit the deadline is the first token; afterwards it slides with
    # each read (lazily, at most every `step` seconds, never firing early).
    idle = timeouts.idle
    step = min(1.0, idle / 10)
    next_slide = 0.0
    try:
        async with asyncio.timeout(first_token) as deadline:
            async with transport.open(request, timeouts) as resp:
                attempt.status = resp.status
                if resp.status >= 400:
                    raise translator.error(resp.status, resp.headers, await resp.read())
                passthrough = translator.passthrough \
                    if translator.framing == "sse" and egress is None else None
                async for raw in resp.iter_chunks():
                    block = framer.split_complete(raw) if passthrough is not None \
                        and ex.stream_tap is None else None
                    if block is not None:
                        # Whole events, as raw bytes: translate one by one up to the
                        # first content (the commit point), then let the translator pass
                        # the plain events that follow as the upstream's own bytes, and
                        # translate only what is left (finish, usage, the end).
                        head = 0
                        prefix = b""
                        if client is None:
                            while head < len(block) and not (state.has_content
                                                             or state.complete):
                                end = block.index(b"\n\n", head) + 2
                                pending += _translate(
                                    translator, framer.parse_complete(block[head:end]), ex)
                                head = end
                            if not (state.has_content or state.complete):
                                continue
                            client = await _commit(ex, attempt)
                            prefix = encode(pending)
                        fast, used = passthrough(block[head:])
                        rest = framer.parse_complete(block[head + used:])
                        try:
                            out = _translate(translator, rest, ex)
                        except UpstreamError:
                            if prefix or fast:  # what came before the error goes first
                                await client.write(prefix + fast)
                            raise
                        data = prefix + fast + encode(out) if out else prefix + fast
                        if state.complete:
                            await client.write(data + _done(ex))
                            await resp.finish()
                            return
                        if data:
                            await client.write(data)
                        now = loop.time()
                        if now >= next_slide:
                            deadline.reschedule(now + idle + step)
                            next_slide = now + step
                        continue
                    events = framer.feed(raw)
                    out = _translate(translator, events, ex)
                    if client is None:
                        pending += out
                        if not (state.has_content or state.complete):
                            continue
                        client = await _commit(ex, attempt)
                        out = pending
                    if ex.stream_tap is not None and out:
                        ex.stream_tap(out)
                    if state.complete:
                        await client.write(encode(out) + _done(ex))
                        await resp.finish()
                        return
                    if out:
                        await client.write(encode(out))
                    now = loop.time()
                    if now >= next_slide:
                        deadline.reschedule(now + idle + step)
                        next_slide = now + step
                out = _translate(translator, framer.flush(), ex)
                out += translator.end_of_stream()
                if not state.complete:
                    raise upstream_protocol(provider.name,
                                            "the stream ended before it was complete")
                if client is None:
                    client = await _commit(ex, attempt)
                    out = pending + out
                if ex.stream_tap is not None and out:
                    ex.stream_tap(out)
                await client.write(encode(out) + _done(ex))
    except TimeoutError:
        phase = "first token" if client is None else "idle stream"
        seconds = round(first_token, 3) if client is None else idle
        err = upstream_timeout(provider.name, phase, seconds)
        if client is None:
            raise err from None
        await _fail_stream(ex, attempt, translator, client, err)
    except UpstreamError as err:
        # Chunks that arrived in the same read as the error still go out first, so
        # what the client sees does not depend on where the upstream's reads split.
        partial = getattr(err, "partial", None) or []
        if client is None:
            if not state.has_content:
                raise
            partial = pending + partial
            client = await _commit(ex, attempt)
        if partial:
            if ex.stream_tap is not None:
                ex.stream_tap(partial)
            try:
                await client.write(encode(partial))
            except ConnectionResetError:
                pass
        await _fail_stream(ex, attempt, translator, client, err)
    except (ConnectionResetError, asyncio.CancelledError):
        # The client went away: the upstream request was closed on the way out.
        ex.status = 499
        if ex.usage is None:
            ex.usage = translator.partial_usage()
        raise
    except Exception:
        if client is None:
            raise  # nothing sent yet: the middleware answers a clean 500
        # A fault of the gateway's own after the stream began: the client must still
        # get a clean end (an error event, no [DONE]) rather than a connection left
        # hanging, and what the upstream billed is still recorded.
        log.exception("stream relay failed", extra={"request_id": ex.request_id})
        ex.error = GatewayError(500, f"The gateway hit an internal error mid-stream "
                                f"(request id {ex.request_id}).", "server_error",
                                code="gateway_internal_error")
        if ex.usage is None:
            ex.usage = translator.partial_usage()
        try:
            await client.write(_error_bytes(ex, ex.error))
        except ConnectionResetError:
            pass


def _done(ex: Exchange) -> bytes:
    return _DONE if ex.egress is None else ex.egress.done(ex.usage)


def _error_bytes(ex: Exchange, err: GatewayError) -> bytes:
    return error_frame(err) if ex.egress is None else ex.egress.error(err)


def _translate(translator: "Translator", events: list, ex: Exchange) -> list[bytes]:
    out: list[bytes] = []
    for event in events:
        try:
            chunks, usage = translator.stream(event)
        except UpstreamError as err:
            err.partial = out  # type: ignore[attr-defined]  # this read's chunks before it
            raise
        if usage is not None:
            ex.usage = usage
        if chunks:
            out += chunks
    return out


async def _commit(ex: Exchange, attempt: Attempt) -> web.StreamResponse:
    now = time.perf_counter_ns()
    attempt.first_token_ns = now
    ex.upstream_ns += now - attempt.started_ns
    ex.target = attempt.target
    ex.status = 200
    response = web.StreamResponse(status=200, headers={**_SSE_HEADERS, **ex.gateway_headers()})
    await response.prepare(ex.http)
    ex.response = response
    return response


async def _fail_stream(ex: Exchange, attempt: Attempt, translator: "Translator",
                       client: web.StreamResponse, err: UpstreamError) -> None:
    attempt.error_class = err.error_class
    ex.error = err
    if ex.usage is None:
        ex.usage = translator.partial_usage()
    try:
        await client.write(_error_bytes(ex, err))
    except ConnectionResetError:
        pass
