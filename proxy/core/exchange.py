"""The Exchange: the one object that travels through the pipeline per request.

Policies read and write it; nothing else is shared per request. It holds the
parsed request, the caller, the resolved model, every attempt with its timing,
the usage and cost, and the response.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from proxy.core.errors import GatewayError, UpstreamError, internal_error
from proxy.core.pricing import Estimate, estimate_body

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.errors import ErrorClass
    from proxy.core.sse import Egress
    from proxy.core.usage import Usage


@dataclass(slots=True)
class Attempt:
    target: "TargetConfig"
    started_ns: int
    ended_ns: int = 0
    status: int | None = None  # the upstream's HTTP status, once its headers came
    error_class: "ErrorClass | None" = None
    first_token_ns: int | None = None
    model: str | None = None  # the public model it was for (a fallback's, maybe)
    usage: "Usage | None" = None  # what this attempt consumed (reported or estimated)
    cost: float | None = None  # its usage at its target's price; None if unpriced
    credential: str | None = None  # the name of the provider's pooled key it sent, if any


@dataclass(frozen=True, slots=True)
class ProviderHold:
    """Money held on a provider budget for the target about to be tried."""

    scope: str
    amount: float
    target: "TargetConfig"
    hold_id: str


@dataclass(frozen=True, slots=True)
class BudgetBlock:
    """The provider budget that kept a target from being tried."""

    provider: str
    budget: Any  # proxy.config.policies.BudgetConfig
    scope: str


@dataclass(slots=True)
class Exchange:
    request_id: str
    http: "web.Request"
    body: dict[str, Any]
    model: "ModelConfig"
    stream: bool = False
    started_ns: int = field(default_factory=time.perf_counter_ns)
    key_name: str | None = None
    key: Any = None  # the authenticated client key's config (policies/auth.py)
    routing_hint: str | None = None  # e.g. "cheaper" or "free_only" when a budget runs low
    attempts: list[Attempt] = field(default_factory=list)
    target: "TargetConfig | None" = None  # the target that served
    served_model: str | None = None  # the public model that served (after fallbacks)
    usage: "Usage | None" = None  # the last attempt's (the answer's, when one served)
    cost: float | None = None  # what the request cost: every attempt's cost, summed
    upstream_ns: int = 0  # time spent waiting on upstreams: total minus this is our overhead
    status: int = 0
    error: "GatewayError | None" = None
    response_body: bytes | None = None  # a non-streaming answer
    response: "web.StreamResponse | None" = None  # a stream already sent
    # What the policies tell each other, typed (each written by one owner):
    estimate: Estimate | None = None  # the request's size and output cap (see estimated())
    cache_status: str | None = None  # "HIT" or "MISS" when the cache policy looked (cache)
    cost_saved: float | None = None  # what a cache hit would have cost (cache)
    target_tokens: dict[str, int] | None = None  # tokens taken per target's tpm (ratelimit)
    provider_hold: "ProviderHold | None" = None  # a provider budget's hold (budget gate)
    budget_blocked: "BudgetBlock | None" = None  # the provider budget that refused (budget)
    trace: Any = None  # the tracing policy's per-request state
    # Called with each batch of OpenAI chunk JSON bytes as it is written to the
    # client (e.g. the cache assembling a streamed answer); None costs nothing.
    stream_tap: Callable[[list[bytes]], None] | None = None
    # Extra response headers a policy wants on the answer (e.g. x-gatewise-cache).
    extra_headers: dict[str, str] | None = None
    # Wraps or replaces the attempt's chat translator for another endpoint's contract
    # (legacy completions, functions, embeddings: translators/completions.py and friends).
    adapter: "Callable[[Any], Any] | None" = None
    # The client's stream wire format when it is not OpenAI chat (proxy/core/sse.py).
    egress: "Egress | None" = None
    # The inbound API that received the request: "chat", "completions", "embeddings",
    # "responses", "messages"; a bounded label for metrics, traces and the access log.
    endpoint: str = "chat"
    # Routing (policies/routes.py writes the first three, the dispatcher `strategy`):
    task: str | None = None  # the request's task kind, for quality and learning per task
    route_rule: Any = None  # the route rule that matched (proxy.config.routes.RouteRule)
    explain: Any = None  # an Explanation being collected for the admin key (engine/explain.py)
    strategy: str | None = None  # the strategy that ordered the targets last tried
    # Why the gateway itself is ending this request early (e.g. the shutdown
    # deadline): set by the server before it cancels the request's task.
    interrupt: "GatewayError | None" = None

    def estimated(self) -> Estimate:
        """The request's prompt size and output cap, estimated once and kept."""
        cached = self.estimate
        if cached is None:
            cached = self.estimate = estimate_body(self.body)
        return cached

    def failed(self, exc: BaseException) -> None:
        """Record what the client gets for an exception leaving the pipeline: its
        error and status, 499 only when the client went away, 500 for a fault of
        the gateway's own. (A stream already sent keeps its 200.)"""
        if isinstance(exc, GatewayError):
            self.error = exc
            if self.response is None:
                self.status = exc.status
        elif isinstance(exc, asyncio.CancelledError) and self.interrupt is not None:
            self.error = self.interrupt  # the gateway ended it (a shutdown), not the client
            if self.response is None:
                self.status = self.interrupt.status
        elif isinstance(exc, (asyncio.CancelledError, ConnectionResetError)):
            self.status = 499
        elif self.error is None or self.error.status != 500:
            self.error = internal_error(self.request_id)
            if self.response is None:
                self.status = 500

    def outcome(self) -> tuple[int, str | None]:
        """The status the client got and the class of its error (None on success):
        an upstream error's class, a gateway error's code, `client_closed` for 499."""
        error = self.error
        if self.status == 499:
            return 499, "client_closed"
        status = self.status or (error.status if error is not None else 0)
        if error is None:
            return status, None
        if isinstance(error, UpstreamError):
            return status, error.error_class.value
        return status, error.code or error.type or "gateway_error"

    @property
    def cache_hit(self) -> bool:
        return self.cache_status == "HIT"

    def add_stream_tap(self, tap: Callable[[list[bytes]], None]) -> None:
        """Add a stream tap, chaining with any already set (cache and tracing both tap)."""
        first = self.stream_tap
        if first is None:
            self.stream_tap = tap
            return

        def both(chunks: list[bytes]) -> None:
            first(chunks)
            tap(chunks)

        self.stream_tap = both

    def overhead_ms(self, now_ns: int | None = None) -> float:
        elapsed = (now_ns or time.perf_counter_ns()) - self.started_ns
        return max(0, elapsed - self.upstream_ns) / 1e6

    def gateway_headers(self) -> dict[str, str]:
        """`x-gatewise-*` for the client, computed when the answer is committed."""
        headers = {"x-gatewise-attempts": str(len(self.attempts)),
                   "x-gatewise-overhead-ms": f"{self.overhead_ms():.3f}"}
        if self.target is not None:
            headers["x-gatewise-target"] = self.target.label
        if self.served_model and self.served_model != self.model.name:
            headers["x-gatewise-fallback"] = self.served_model
        if self.cost is not None:  # known once the answer is in (never for a stream's headers)
            headers["x-gatewise-cost"] = f"{self.cost:.8f}"
        strategy = self.strategy
        if strategy is not None:
            if self.route_rule is None and self.explain is None:  # the common case, inline
                headers["x-gatewise-route"] = "strategy=" + strategy
            else:
                self.route_headers(headers)
        if self.extra_headers:
            headers.update(self.extra_headers)
        return headers

    def route_headers(self, headers: dict[str, str]) -> None:
        """`x-gatewise-route` (the rule and strategy), and the explanation when asked."""
        rule = self.route_rule
        headers["x-gatewise-route"] = f"rule={rule.name}; strategy={self.strategy}" \
            if rule is not None else f"strategy={self.strategy}"
        if self.explain is not None:
            headers["x-gatewise-explain"] = self.explain.header(self)
