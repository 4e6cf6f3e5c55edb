"""OpenTelemetry traces: one server span per request, one client span per attempt.

Only built when tracing is on (`telemetry.otlp_endpoint` or `telemetry.tracing`);
otherwise nothing of this is in the request path. The tracer provider belongs
to the Gateway, never to the process. A client's W3C `traceparent` continues
its trace; each upstream attempt is sent a `traceparent` naming that attempt's
span (its id is chosen before the attempt starts, and the span is recorded with
the attempt's real times when it ends). Prompt and completion text go into spans
only with `telemetry.capture_content: true`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.core.errors import GatewayError, UpstreamError
from proxy.core.exchange import Attempt, Exchange
from proxy.core.pipeline import CallNext
from proxy.engine.transport import OUTBOUND_TRACEPARENT

if TYPE_CHECKING:
    from proxy.config.types import GatewayConfig

# gen_ai.provider.name values from the GenAI semantic conventions.
PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
                  "gemini": "gcp.gemini", "ollama": "ollama", "mock": "gatewise.mock"}
_REQUEST_PARAMS = (("temperature", "gen_ai.request.temperature"),
                   ("top_p", "gen_ai.request.top_p"),
                   ("max_completion_tokens", "gen_ai.request.max_tokens"),
                   ("max_tokens", "gen_ai.request.max_tokens"),
                   ("seed", "gen_ai.request.seed"),
                   ("frequency_penalty", "gen_ai.request.frequency_penalty"),
                   ("presence_penalty", "gen_ai.request.presence_penalty"))


class _PresetIds(RandomIdGenerator):
    """Lets an attempt's span take the id its upstream already saw in `traceparent`."""

    def __init__(self) -> None:
        self.preset = 0

    def generate_span_id(self) -> int:
        preset, self.preset = self.preset, 0
        return preset or super().generate_span_id()


class _RequestTrace:
    """Per-request tracing state (in `ex.trace`)."""

    __slots__ = (
        "capture",
        "finish_reasons",
        "flags",
        "model",
        "next_span_id",
        "response_id",
        "span",
        "text",
        "trace_id",
    )

    def __init__(self, span: Any, capture: bool) -> None:
        context = span.get_span_context()
        self.span = span
        self.trace_id = context.trace_id
        self.flags = int(context.trace_flags)
        self.next_span_id = 0
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: list[str] = []
        self.capture = capture
        self.text: list[str] = []

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.next_span_id:016x}-{self.flags:02x}"

    def tap(self, chunks: list[bytes]) -> None:
        """Stream tap: the response model, id and finish reasons (all text only when
        content capture is on)."""
        for raw in chunks:
            if not (self.capture or self.model is None or b'"finish_reason":"' in raw):
                continue
            chunk = orjson.loads(raw)
            if self.model is None:
                self.model, self.response_id = chunk.get("model"), chunk.get("id")
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    self.finish_reasons.append(choice["finish_reason"])
                if self.capture:
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        self.text.append(content)


class Tracing:
    def __init__(self, config: GatewayConfig) -> None:
        telemetry = config.telemetry
        self._ids = _PresetIds()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": telemetry.service_name}),
            id_generator=self._ids, shutdown_on_exit=False)
        if telemetry.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=telemetry.otlp_endpoint)))
        self.tracer = self.provider.get_tracer("gatewise")
        self._capture = telemetry.capture_content
        self._propagator = TraceContextTextMapPropagator()
        self._provider_names = {name: PROVIDER_NAMES.get(p.type, p.type)
                                for name, p in config.providers.items()}
        self._offset = time.time_ns() - time.perf_counter_ns()

    def add_exporter(self, exporter: SpanExporter) -> None:
        """Export synchronously to `exporter` too (tests use an in-memory one)."""
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))

    def shutdown(self) -> None:
        self.provider.shutdown()

    def _epoch(self, perf_ns: int) -> int:
        return perf_ns + self._offset

    # --- the server span ---------------------------------------------------------------

    async def policy(self, ex: Exchange, call_next: CallNext) -> None:
        parent = self._propagator.extract(ex.http.headers)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                      "gen_ai.request.model": ex.model.name,
                                      "gatewise.request_id": ex.request_id,
                                      "gatewise.endpoint": ex.endpoint,
                                      "gatewise.stream": ex.stream}
        body = ex.body
        for field, name in _REQUEST_PARAMS:
            value = body.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes.setdefault(name, value)
        if self._capture:
            attributes["gen_ai.input.messages"] = orjson.dumps(body.get("messages")).decode()
        span = self.tracer.start_span(f"chat {ex.model.name}", context=parent,
                                      kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=self._epoch(ex.started_ns))
        state = _RequestTrace(span, self._capture)
        state.next_span_id = self._ids.generate_span_id()
        ex.trace = state
        if ex.stream:
            ex.add_stream_tap(state.tap)
        token = OUTBOUND_TRACEPARENT.set(state.traceparent())
        status, error = 0, None
        try:
            await call_next(ex)
            status, error = ex.status or 200, ex.error
        except GatewayError as err:
            status, error = err.status, err
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:
            status, error = 500, exc
            raise
        finally:
            OUTBOUND_TRACEPARENT.reset(token)
            self._end(ex, state, status, error)

    def _end(self, ex: Exchange, state: _RequestTrace, status: int,
             error: BaseException | None) -> None:
        span = state.span
        attrs: dict[str, Any] = {"http.response.status_code": status,
                                 "gatewise.attempts": len(ex.attempts)}
        if ex.target is not None:
            attrs["gatewise.target"] = ex.target.label
            attrs["gen_ai.provider.name"] = self._provider_names.get(ex.target.provider,
                                                                     ex.target.provider)
        if not ex.stream and ex.response_body and status == 200:
            self._read_body(ex.response_body, state, attrs)
        elif state.capture and state.text:
            attrs["gen_ai.output.messages"] = orjson.dumps(
                [{"role": "assistant", "content": "".join(state.text)}]).decode()
        if state.model:
            attrs["gen_ai.response.model"] = state.model
        if state.response_id:
            attrs["gen_ai.response.id"] = state.response_id
        if state.finish_reasons:
            attrs["gen_ai.response.finish_reasons"] = tuple(state.finish_reasons)
        usage = ex.usage
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if ex.cost is not None:
            attrs["gatewise.cost_usd"] = float(ex.cost)
        cache = ex.cache_status
        if cache is not None:
            attrs["gatewise.cache"] = cache.lower()
            if ex.cost_saved is not None:
                attrs["gatewise.cost_saved_usd"] = float(ex.cost_saved)
        if ex.key_name:
            attrs["gatewise.key_name"] = ex.key_name
        if error is not None:
            _mark_error(span, attrs, error)
        elif status == 499:
            attrs["error.type"] = "client_closed"
        span.set_attributes(attrs)
        span.end()

    def _read_body(self, body: bytes, state: _RequestTrace, attrs: dict[str, Any]) -> None:
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        state.model = completion.get("model")
        state.response_id = completion.get("id")
        choices = completion.get("choices") or []
        state.finish_reasons = [c.get("finish_reason") for c in choices
                                if isinstance(c, dict) and c.get("finish_reason")]
        if not choices and isinstance(completion.get("stop_reason"), str):  # /v1/messages
            state.finish_reasons = [completion["stop_reason"]]
        if state.capture:
            attrs["gen_ai.output.messages"] = orjson.dumps(
                [c.get("message") for c in choices if isinstance(c, dict)]).decode()

    # --- attempt spans -------------------------------------------------------------------

    def observe_attempt(self, ex: Exchange, attempt: Attempt) -> None:
        """Dispatcher observer: record the attempt's span under the id its upstream
        saw, then pick the id for the next attempt."""
        state = ex.trace
        if state is None:
            return
        target = attempt.target
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._provider_names.get(target.provider, target.provider),
            "gen_ai.request.model": target.model,
            "gatewise.target": target.label,
            "gatewise.attempt": _index(ex.attempts, attempt),
        }
        if attempt.status is not None:
            attrs["http.response.status_code"] = attempt.status
        if attempt.first_token_ns:
            attrs["gatewise.time_to_first_token_ms"] = round(
                (attempt.first_token_ns - attempt.started_ns) / 1e6, 3)
        self._ids.preset = state.next_span_id
        span = self.tracer.start_span(f"chat {target.model}",
                                      context=trace.set_span_in_context(state.span),
                                      kind=SpanKind.CLIENT, attributes=attrs,
                                      start_time=self._epoch(attempt.started_ns))
        if attempt.error_class is not None:
            span.set_attributes({"error.type": attempt.error_class.value,
                                 "gatewise.error_class": attempt.error_class.value})
            span.set_status(Status(StatusCode.ERROR, attempt.error_class.value))
        span.end(end_time=self._epoch(attempt.ended_ns or time.perf_counter_ns()))
        state.next_span_id = self._ids.generate_span_id()
        OUTBOUND_TRACEPARENT.set(state.traceparent())


def _index(attempts: list[Attempt], attempt: Attempt) -> int:
    for i, other in enumerate(attempts):
        if other is attempt:
            return i + 1
    return len(attempts)


def _mark_error(span: Any, attrs: dict[str, Any], error: BaseException) -> None:
    """The class of the error, never its text (which may quote an upstream)."""
    if isinstance(error, UpstreamError):
        kind = error.error_class.value
        attrs["gatewise.error_class"] = kind
    elif isinstance(error, GatewayError):
        kind = error.code or error.type or "gateway_error"
    else:
        kind = type(error).__name__
    attrs["error.type"] = kind
    span.set_status(Status(StatusCode.ERROR, kind))


def build_tracing(config: GatewayConfig) -> Tracing | None:
    return Tracing(config) if config.telemetry.tracing else None
