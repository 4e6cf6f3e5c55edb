"""The end of the pipeline: send the exchange upstream and answer the client.

Targets are tried in the plan's order; a retryable failure moves on to the
next one. A stream is held back until its first content chunk, so a failure
before that can still fall back and the client sees one clean stream; after
it, a failure ends the stream with `data: {"error": ...}` and no `[DONE]`.
Each upstream read becomes at most one write to the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import orjson
from aiohttp import web

from proxy.errors import (ErrorClass, GatewayError, UpstreamError, upstream_protocol,
                          upstream_timeout)
from proxy.exchange import Attempt, Exchange
from proxy.framing import new_framer

if TYPE_CHECKING:
    from proxy.config import ModelConfig, ProviderConfig, TargetConfig
    from translators.base import Translator

_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache", "x-accel-buffering": "no"}


def encode_frames(chunks: Iterable[bytes]) -> bytes:
    return b"".join(b"data: " + chunk + b"\n\n" for chunk in chunks)


def error_frame(error: GatewayError) -> bytes:
    return b"data: " + orjson.dumps({"error": error.payload()}) + b"\n\n"


def provider_disabled(model: "ModelConfig", reasons: list[str]) -> GatewayError:
    return GatewayError(
        503, f"Model '{model.name}' is unavailable: " + "; ".join(reasons) + ".",
        "server_error", code="provider_unavailable", headers={"retry-after": "60"})


# A gate says whether a target may be tried now: None, or seconds until it may
# (per-target rate limits, cool-downs). An observer learns each attempt's outcome
# (breakers, latency statistics, limit reconciliation).
TargetGate = Callable[[Exchange, "TargetConfig"], "float | None"]
AttemptObserver = Callable[[Exchange, Attempt], None]


def no_target_room(model: "ModelConfig", retry_after: float) -> GatewayError:
    seconds = max(1, int(retry_after + 0.999))
    return GatewayError(
        429, f"Every target of model '{model.name}' is at its configured rate limit; "
             f"retry in {seconds}s.", "rate_limit_exceeded", code="upstream_rate_limit",
        headers={"retry-after": str(seconds)})


class Dispatcher:
    """Terminal handler of the pipeline."""

    def __init__(self, providers: Mapping[str, "ProviderConfig"],
                 translators: Mapping[str, type["Translator"]],
                 transports: Mapping[str, Any]) -> None:
        self._providers = providers
        self._translators = translators
        self._transports = transports
        self.gates: list[TargetGate] = []
        self.observers: list[AttemptObserver] = []

    def plan(self, ex: Exchange) -> list["TargetConfig"]:
        """The targets to try, in order (routing strategies refine this)."""
        return list(ex.model.targets)

    async def __call__(self, ex: Exchange) -> None:
        disabled: list[str] = []
        last: UpstreamError | None = None
        gated: list[float] = []
        for target in self.plan(ex):
            provider = self._providers[target.provider]
            if not provider.enabled:
                disabled.append(f"provider '{provider.name}' is disabled because "
                                f"{provider.disabled_reason}")
                continue
            wait = self._gated(ex, target)
            if wait is not None:
                gated.append(wait)
                continue
            try:
                await self.attempt(ex, provider, target)
                return
            except UpstreamError as err:
                last = err
                if not err.error_class.retryable:
                    raise
        if last is not None:
            raise last
        if gated:
            raise no_target_room(ex.model, min(gated))
        raise provider_disabled(ex.model, disabled or ["it has no targets"])

    async def attempt(self, ex: Exchange, provider: "ProviderConfig",
                      target: "TargetConfig") -> None:
        translator = self._translators[provider.type](provider)
        request = translator.request(ex.body, target, stream=ex.stream)
        attempt = Attempt(target, time.perf_counter_ns())
        ex.attempts.append(attempt)
        transport = self._transports[provider.name]
        try:
            if ex.stream:
                await self._stream(ex, attempt, translator, transport, request, provider)
            else:
                await self._json(ex, attempt, translator, transport, request, provider)
        except UpstreamError as err:
            attempt.error_class = err.error_class
            attempt.status = err.upstream_status or err.status
            raise
        finally:
            attempt.ended_ns = time.perf_counter_ns()
            for observe in self.observers:
                observe(ex, attempt)

    def _gated(self, ex: Exchange, target: "TargetConfig") -> float | None:
        for gate in self.gates:
            wait = gate(ex, target)
            if wait is not None:
                return wait
        return None

    async def _json(self, ex: Exchange, attempt: Attempt, translator: "Translator",
                    transport: Any, request: Any, provider: "ProviderConfig") -> None:
        try:
            async with transport.open(request, provider.timeouts) as resp:
                body = await resp.read()
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

    async def _stream(self, ex: Exchange, attempt: Attempt, translator: "Translator",
                      transport: Any, request: Any, provider: "ProviderConfig") -> None:
        timeouts = provider.timeouts
        loop = asyncio.get_running_loop()
        framer = new_framer(translator.framing)
        state = translator.state
        pending: list[bytes] = []
        client: web.StreamResponse | None = None
        # Pre-commit the deadline is the first token; afterwards it slides with
        # each read (lazily, at most every `step` seconds, never firing early).
        idle = timeouts.idle
        step = min(1.0, idle / 10)
        next_slide = 0.0
        try:
            async with asyncio.timeout(timeouts.first_token) as deadline:
                async with transport.open(request, timeouts) as resp:
                    attempt.status = resp.status
                    if resp.status >= 400:
                        raise translator.error(resp.status, resp.headers, await resp.read())
                    chunks = resp.iter_chunks()
                    async for raw in chunks:
                        out = self._translate(translator, framer.feed(raw), ex)
                        if client is None:
                            pending += out
                            if not (state.has_content or state.complete):
                                continue
                            client = await self._commit(ex, attempt, pending)
                            out = pending
                        if ex.stream_tap is not None and out:
                            ex.stream_tap(out)
                        if state.complete:
                            await client.write(encode_frames(out) + _DONE)
                            await resp.finish()
                            return
                        if out:
                            await client.write(encode_frames(out))
                        now = loop.time()
                        if now >= next_slide:
                            deadline.reschedule(now + idle + step)
                            next_slide = now + step
                    out = self._translate(translator, framer.flush(), ex)
                    out += translator.end_of_stream()
                    if not state.complete:
                        raise upstream_protocol(provider.name,
                                                "the stream ended before it was complete")
                    if client is None:
                        client = await self._commit(ex, attempt, pending)
                        out = pending + out
                    if ex.stream_tap is not None and out:
                        ex.stream_tap(out)
                    await client.write(encode_frames(out) + _DONE)
        except TimeoutError:
            phase = "first token" if client is None else "idle stream"
            seconds = timeouts.first_token if client is None else idle
            err = upstream_timeout(provider.name, phase, seconds)
            if client is None:
                raise err from None
            await self._fail_stream(ex, attempt, translator, client, err)
        except UpstreamError as err:
            if client is None:
                raise
            await self._fail_stream(ex, attempt, translator, client, err)
        except (ConnectionResetError, asyncio.CancelledError):
            # The client went away: the upstream request was closed on the way out.
            ex.status = 499
            if ex.usage is None:
                ex.usage = translator.partial_usage()
            raise

    @staticmethod
    def _translate(translator: "Translator", events: list, ex: Exchange) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            chunks, usage = translator.stream(event)
            if usage is not None:
                ex.usage = usage
            if chunks:
                out += chunks
        return out

    async def _commit(self, ex: Exchange, attempt: Attempt,
                      pending: list[bytes]) -> web.StreamResponse:
        now = time.perf_counter_ns()
        attempt.first_token_ns = now
        ex.upstream_ns += now - attempt.started_ns
        ex.target = attempt.target
        ex.status = 200
        response = web.StreamResponse(status=200, headers={**_SSE_HEADERS,
                                                           **ex.gateway_headers()})
        await response.prepare(ex.http)
        ex.response = response
        return response

    async def _fail_stream(self, ex: Exchange, attempt: Attempt, translator: "Translator",
                           client: web.StreamResponse, err: UpstreamError) -> None:
        attempt.error_class = err.error_class
        ex.error = err
        if ex.usage is None:
            ex.usage = translator.partial_usage()
        try:
            await client.write(error_frame(err))
        except ConnectionResetError:
            pass


def is_client_error(error_class: ErrorClass) -> bool:
    return error_class in (ErrorClass.BAD_REQUEST, ErrorClass.CONTEXT_WINDOW,
                           ErrorClass.CONTENT_FILTER, ErrorClass.NOT_FOUND)
