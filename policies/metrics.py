"""Prometheus metrics: always on, so they must be cheap.

A hand-written exposition (text format 0.0.4): counters and histograms are
plain dicts keyed by label tuples, so recording a request is a few dict
increments and one bisect per histogram. Label values are bounded: configured
model names, configured target labels, HTTP status codes, error classes and
gateway error codes; never keys, prompts or anything a client chooses.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.core.errors import GatewayError, UpstreamError
from proxy.core.exchange import Attempt, Exchange
from proxy.core.pipeline import CallNext
from policies.prometheus import Counter, Histogram, _labels, _num

if TYPE_CHECKING:
    from proxy.config.types import GatewayConfig

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                    2.56, 5.12, 10.24, 20.48, 40.96, 81.92)  # GenAI semconv advice + finer low end
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: how often the event loop's lag is sampled (a timer that should fire on time)
LAG_SAMPLE_S = 0.1
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
#: GenAI semantic conventions' operation names, by gatewise endpoint
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings",
              "responses": "chat", "messages": "chat"}
REJECTIONS = {"gateway_rate_limit": "rate_limit", "budget_exceeded": "budget"}


def error_label(err: BaseException | None) -> str:
    """A bounded error label: the upstream's class, or the gateway's own code."""
    if err is None:
        return ""
    if isinstance(err, UpstreamError):
        return err.error_class.value
    if isinstance(err, GatewayError):
        return err.code or err.type or "gateway_error"
    return "internal"


#: (name, help, label names, [(label values, value)]): gauges another part computes
GaugeFamily = tuple[str, str, tuple[str, ...], list[tuple[tuple, float]]]
#: told of each request as it is recorded: (exchange, status, error label, seconds)
RequestListener = Callable[[Exchange, int, str, float], None]


class Metrics:
    """Every series gatewise exports; owned by the Gateway."""

    def __init__(self, config: GatewayConfig, *, on_record: RequestListener | None = None,
                 gauges: Iterable[Callable[[], list[GaugeFamily]]] = ()) -> None:
        """`on_record`: the live statistics (the page, the SLOs); `gauges`: families
        rendered at each scrape (the SLO gauges), kept as data so any exposition can
        render them."""
        self.on_record = on_record
        self.gauges = tuple(gauges)
        self.requests = Counter("gatewise_requests_total", "Requests by endpoint, model, "
                                "target, status and error class (refused ones included).",
                                ("endpoint", "model", "target", "status", "error_class"))
        self.duration = Histogram("gen_ai_client_operation_duration_seconds",
                                  "Whole request duration as the client sees it.",
                                  ("gen_ai_operation_name", "gen_ai_request_model", "error_type"),
                                  DURATION_BUCKETS)
        self.upstream = Histogram("gatewise_upstream_duration_seconds", "Each upstream "
                                  "attempt, send to last byte.", ("target", "outcome"),
                                  DURATION_BUCKETS)
        self.ttft = Histogram("gatewise_time_to_first_token_seconds", "Streams: attempt start "
                              "to the first content chunk.", ("target",), TTFT_BUCKETS)
        self.overhead = Histogram("gatewise_overhead_seconds", "The gateway's own time: total "
                                  "minus upstream wait.", ("model",), OVERHEAD_BUCKETS)
        self.tokens = Histogram("gen_ai_client_token_usage", "Tokens per request.",
                                ("gen_ai_operation_name", "gen_ai_request_model",
                                 "gen_ai_token_type"), TOKEN_BUCKETS)
        self.cost = Counter("gatewise_cost_usd_total", "Spend in USD.", ("model", "target"))
        self.cache = Counter("gatewise_cache_requests_total", "Cache lookups by result.",
                             ("model", "result"))
        self.saved = Counter("gatewise_cache_saved_usd_total", "USD a cache hit saved.",
                             ("model",))
        self.rejections = Counter("gatewise_rejections_total", "Requests refused by the "
                                  "gateway's rate limits or budgets.", ("model", "reason"))
        self.breaker = Counter("gatewise_breaker_state", "Circuit breaker per target: "
                               "0 closed, 1 half-open, 2 open.", ("target",), kind="gauge")
        self.in_flight_gauge = Counter("gatewise_requests_in_flight", "Requests being served.",
                                       (), kind="gauge")
        self.loop_lag = Histogram("gatewise_event_loop_lag_seconds", "How late a timer "
                                  f"fires, sampled every {LAG_SAMPLE_S:g}s: the wait every "
                                  "request and stream adds when the process is busy.", (),
                                  LAG_BUCKETS)
        self.credentials = Counter("gatewise_upstream_credential_attempts_total", "Upstream "
                                   "attempts per credential of a provider's key pool (its "
                                   "name, never the key) and outcome.",
                                   ("provider", "credential", "outcome"))
        self.credential_cooldowns = Counter("gatewise_upstream_credential_cooldowns_total",
                                            "A pooled credential set aside after its own "
                                            "rate limit, quota or refusal.",
                                            ("provider", "credential", "error_class"))
        self.reloads = Counter("gatewise_config_reloads_total", "Config reloads: ok (applied), "
                               "invalid (refused: the running config stays), error.",
                               ("result",))
        self.in_flight = 0
        self._breaker_state: Callable[[str], str] | None = None
        self._statuses = {s: str(s) for s in (200, 400, 401, 403, 404, 408, 413, 429, 499,
                                              500, 502, 503, 504)}
        #: each request label set's histogram cells, bound once (`_child`)
        self._children: dict[tuple, list] = {}
        self._attempt_cells: dict[tuple, list] = {}  # (target, outcome): its upstream cell
        self.track_targets(t.label for m in config.models.values() for t in m.targets)
        self._series = (self.requests, self.duration, self.tokens, self.upstream, self.ttft,
                        self.overhead, self.cost, self.cache, self.saved, self.rejections,
                        self.breaker, self.in_flight_gauge, self.loop_lag, self.credentials,
                        self.credential_cooldowns, self.reloads)

    # --- hooks -----------------------------------------------------------------------

    def set_breaker_state(self, target_label: str, state: str | int) -> None:
        """The breakers' transition hook: 'closed' | 'half-open' | 'open' (or 0/1/2)."""
        value = state if isinstance(state, int) else BREAKER_STATES[state]
        self.breaker.set((target_label,), value)

    def watch_breakers(self, state: Callable[[str], str]) -> None:
        """Read each target's breaker at exposition too: an open breaker whose wait is
        over admits probes (half-open) before any request tells it so."""
        self._breaker_state = state

    def observe_attempt(self, ex: Exchange, attempt: Attempt) -> None:
        """Dispatcher observer: called as each upstream attempt ends."""
        label = attempt.target.label
        outcome = attempt.error_class.value if attempt.error_class is not None else "ok"
        labels = (label, outcome)
        cell = self._attempt_cells.get(labels)  # Histogram.observe, on its bound cell
        if cell is None:
            cell = self._attempt_cells[labels] = self.upstream.cell(labels)
        value = (attempt.ended_ns - attempt.started_ns) / 1e9
        cell[0] += value
        cell[1 + bisect_left(DURATION_BUCKETS, value)] += 1
        if attempt.first_token_ns:
            self.ttft.observe((label,), (attempt.first_token_ns - attempt.started_ns) / 1e9)
        if attempt.credential is not None:
            self.credentials.inc((attempt.target.provider, attempt.credential, outcome))

    def credential_cooled(self, provider: str, credential: str, error_class: str,
                          seconds: float) -> None:
        """A key pool's hook (proxy/engine/credentials.py)."""
        self.credential_cooldowns.inc((provider, credential, error_class))

    def follow(self, on_record: RequestListener | None,
               gauges: Iterable[Callable[[], list[GaugeFamily]]]) -> None:
        """A reload's generation takes over: its live statistics and SLO gauges."""
        self.on_record = on_record
        self.gauges = tuple(gauges)

    def track_targets(self, labels: "Iterable[str]") -> None:
        """The breaker gauge covers the configured targets (again after a reload)."""
        wanted = {(label,) for label in labels}
        for gone in [k for k in self.breaker.values if k not in wanted]:
            del self.breaker.values[gone]
        for key in wanted:
            self.breaker.values.setdefault(key, 0)

    async def policy(self, ex: Exchange, call_next: CallNext) -> None:
        """Pipeline policy (right inside the access log): one record per request."""
        self.in_flight += 1
        try:
            await call_next(ex)
        except GatewayError as err:
            self.record(ex, err.status, err)
            raise
        except asyncio.CancelledError:
            interrupt = ex.interrupt if ex.response is None else None
            self.record(ex, interrupt.status if interrupt else 499, interrupt)
            raise
        except ConnectionResetError:  # the client left, or was cut off for not reading
            self.record(ex, 499, ex.error)
            raise
        except Exception as exc:
            self.record(ex, 500, exc)
            raise
        else:
            self.record(ex, ex.status or 200, ex.error)
        finally:
            self.in_flight -= 1

    def _child(self, labels: tuple) -> list:
        """The cells a request with these labels (endpoint, model, target, status, error)
        adds to: [duration, overhead, input tokens, output tokens]; the token cells are
        made at their first use (a series appears once something was recorded in it)."""
        endpoint, model, _, _, error = labels
        operation = OPERATIONS.get(endpoint, endpoint)
        child = self._children[labels] = [self.duration.cell((operation, model, error)),
                                          self.overhead.cell((model,)), None, None]
        return child

    def record(self, ex: Exchange, status: int, err: BaseException | None) -> None:
        now = time.perf_counter_ns()
        model = ex.model.name
        target = ex.target.label if ex.target is not None else ""
        error = error_label(err) if err is not None else ""
        status_label = self._statuses.get(status) or str(status)
        endpoint = ex.endpoint
        labels = (endpoint, model, target, status_label, error)
        child = self._children.get(labels)
        if child is None:
            child = self._child(labels)
        counts = self.requests.values
        counts[labels] = counts.get(labels, 0.0) + 1.0
        # Histogram.observe, inlined on the cells bound to these labels
        seconds = (now - ex.started_ns) / 1e9
        cell = child[0]
        cell[0] += seconds
        cell[1 + bisect_left(DURATION_BUCKETS, seconds)] += 1
        value = max(0, now - ex.started_ns - ex.upstream_ns) / 1e9
        cell = child[1]
        cell[0] += value
        cell[1 + bisect_left(OVERHEAD_BUCKETS, value)] += 1
        usage = ex.usage
        cache = ex.cache_status
        if usage is not None and cache != "HIT":
            cell = child[2]
            if cell is None:
                operation = OPERATIONS.get(endpoint, endpoint)
                cell = child[2] = self.tokens.cell((operation, model, "input"))
                child[3] = self.tokens.cell((operation, model, "output"))
            value = usage.prompt_tokens
            cell[0] += value
            cell[1 + bisect_left(TOKEN_BUCKETS, value)] += 1
            value = usage.completion_tokens
            cell = child[3]
            cell[0] += value
            cell[1 + bisect_left(TOKEN_BUCKETS, value)] += 1
        cost = ex.cost
        if cost:
            counts = self.cost.values  # Counter.inc, inlined
            labels = (model, target)
            counts[labels] = counts.get(labels, 0.0) + cost
        if cache is not None:
            self.cache.inc((model, "hit" if cache == "HIT" else "miss"))
            saved = ex.cost_saved
            if saved:
                self.saved.inc((model,), saved)
        if status == 429 and error in REJECTIONS:
            self.rejections.inc((model, REJECTIONS[error]))
        if self.on_record is not None:
            self.on_record(ex, status, error, seconds)

    def outside(self, endpoint: str, status: int, err: GatewayError | None,
                started_ns: int) -> None:
        """A request that never reached the pipeline (refused before it, or not a model
        call): counted, and timed when it was a model call."""
        error = error_label(err)
        self.requests.inc((endpoint, "", "", self._statuses.get(status) or str(status), error))
        operation = OPERATIONS.get(endpoint)
        if operation is not None:
            self.duration.observe((operation, "", error),
                                  (time.perf_counter_ns() - started_ns) / 1e9)

    async def watch_loop(self) -> None:
        """Sample the event loop's lag for as long as the gateway runs (ten timers a
        second: nothing next to the traffic it measures)."""
        clock = time.perf_counter
        observe = self.loop_lag.observe
        while True:
            start = clock()
            await asyncio.sleep(LAG_SAMPLE_S)
            observe((), max(0.0, clock() - start - LAG_SAMPLE_S))

    # --- exposition ------------------------------------------------------------------

    def _refresh(self) -> None:
        self.in_flight_gauge.set((), self.in_flight)
        if self._breaker_state is not None:
            for labels in list(self.breaker.values):
                self.set_breaker_state(labels[0], self._breaker_state(labels[0]))

    def snapshot(self) -> dict[str, list]:
        """Every series' values, for another worker's /metrics to add up (JSON-able)."""
        self._refresh()
        return {series.name: [[list(labels), value] for labels, value in
                              (series.values if isinstance(series, Counter)
                               else series.cells).items()] for series in self._series}

    def render(self, peers: list[dict[str, list]] = ()) -> bytes:
        """The exposition; with `peers` (other workers' snapshots) their sum."""
        self._refresh()
        out: list[str] = []
        for series in self._series:
            if peers:
                series.render(out, series.merge([p.get(series.name, []) for p in peers]))
            else:
                series.render(out)
        for family in self.gauges:
            for name, help_, names, samples in family():
                out.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")
                for labels, value in samples:
                    out.append(f"{name}{_labels(names, labels)} {_num(value)}\n")
        return "".join(out).encode()

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics (one process; several workers: proxy/server/peers.py)"""
        return web.Response(body=self.render(), headers={"content-type": CONTENT_TYPE})
