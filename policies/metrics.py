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


class Counter:
    __slots__ = ("help", "kind", "labelnames", "name", "values")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...],
                 kind: str = "counter") -> None:
        self.name, self.help, self.labelnames, self.kind = name, help_, labelnames, kind
        self.values: dict[tuple, float] = {}

    def inc(self, labels: tuple, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def set(self, labels: tuple, value: float) -> None:
        self.values[labels] = value

    def merge(self, peers: list[list]) -> dict[tuple, float]:
        """This series with other workers' (`snapshot` rows): counters and the in-flight
        gauge add up; the breaker gauge takes the worst state any worker sees."""
        merged = dict(self.values)
        worst = self.name == "gatewise_breaker_state"
        for rows in peers:
            for labels, value in rows:
                key = tuple(labels)
                mine = merged.get(key)
                merged[key] = value if mine is None else max(mine, value) if worst \
                    else mine + value
        return merged

    def render(self, out: list[str], values: dict[tuple, float] | None = None) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n")
        for labels, value in (self.values if values is None else values).items():
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_num(value)}\n")


class Histogram:
    __slots__ = ("bounds", "cells", "help", "labelnames", "name")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...],
                 buckets: Iterable[float]) -> None:
        self.name, self.help, self.labelnames = name, help_, labelnames
        self.bounds = tuple(float(b) for b in buckets)
        self.cells: dict[tuple, list] = {}  # labels -> [sum, count per bucket..., +Inf]

    def observe(self, labels: tuple, value: float) -> None:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0.0] + [0] * (len(self.bounds) + 1)
        cell[0] += value
        cell[1 + bisect_left(self.bounds, value)] += 1

    def merge(self, peers: list[list]) -> dict[tuple, list]:
        """Bucket by bucket, with other workers' cells (same buckets: same code)."""
        merged = {labels: list(cell) for labels, cell in self.cells.items()}
        for rows in peers:
            for labels, cell in rows:
                key = tuple(labels)
                mine = merged.get(key)
                merged[key] = list(cell) if mine is None else [a + b for a, b in zip(mine, cell)]
        return merged

    def render(self, out: list[str], cells: dict[tuple, list] | None = None) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n")
        names = self.labelnames + ("le",)
        for labels, cell in (self.cells if cells is None else cells).items():
            running = 0
            for bound, count in zip(self.bounds, cell[1:]):
                running += count
                out.append(f"{self.name}_bucket{_labels(names, labels + (_num(bound),))} "
                           f"{running}\n")
            running += cell[-1]
            out.append(f"{self.name}_bucket{_labels(names, labels + ('+Inf',))} {running}\n")
            base = _labels(self.labelnames, labels)
            out.append(f"{self.name}_sum{base} {_num(cell[0])}\n")
            out.append(f"{self.name}_count{base} {running}\n")


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)) + "}"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _num(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"


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
        self.upstream.observe((label, outcome), (attempt.ended_ns - attempt.started_ns) / 1e9)
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

    def record(self, ex: Exchange, status: int, err: BaseException | None) -> None:
        now = time.perf_counter_ns()
        model = ex.model.name
        target = ex.target.label if ex.target is not None else ""
        error = error_label(err)
        status_label = self._statuses.get(status) or str(status)
        endpoint = ex.endpoint
        operation = OPERATIONS.get(endpoint, endpoint)
        self.requests.inc((endpoint, model, target, status_label, error))
        seconds = (now - ex.started_ns) / 1e9
        self.duration.observe((operation, model, error), seconds)
        self.overhead.observe((model,), max(0, now - ex.started_ns - ex.upstream_ns) / 1e9)
        usage = ex.usage
        cache = ex.cache_status
        if usage is not None and cache != "HIT":
            self.tokens.observe((operation, model, "input"), usage.prompt_tokens)
            self.tokens.observe((operation, model, "output"), usage.completion_tokens)
        if ex.cost:
            self.cost.inc((model, target), ex.cost)
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
