"""Live statistics for the page and the SLOs: per target (each upstream attempt)
and per model (each request as the client saw it), over rolling windows.

The hot path only adds to a small per-second cell (`observe_attempt` is a
dispatcher observer; `observe_request` is told by the metrics policy as each
request ends). Once a second `tick()` moves those cells into rings — the last
minute for the page, each SLO's window, and the gateway-wide hour for the
charts — so nothing is ever summed per request or per page view.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from proxy.core.errors import ErrorClass
from proxy.state.series import Cell, Ring, bucket, quantile

if TYPE_CHECKING:
    from proxy.core.exchange import Attempt, Exchange

CELL_S = 10.0  # ring resolution
RECENT_S = 60.0  # the page's "now": the last minute
CHART_CELLS = 360  # the charts: one hour of 10 s cells
#: attempt outcomes that count against a target's availability: its own failures,
#: and a refused credential (the target cannot serve at all)
_TARGET_BAD = frozenset({ErrorClass.SERVER, ErrorClass.OVERLOADED, ErrorClass.TIMEOUT,
                         ErrorClass.CONNECT, ErrorClass.AUTH})


@dataclass(slots=True)
class LastError:
    at: float  # wall clock
    status: int | None
    error: str  # an error class or the gateway's error code: never upstream text


def cell_size(window: float) -> float:
    """10 s cells up to an hour; longer windows keep 360 cells of a multiple of 10 s."""
    if window <= 3600:
        return CELL_S
    return CELL_S * -(-window // (CELL_S * CHART_CELLS))


class Series:
    """One subject (a target or a model): the open second, the rings, the last error."""

    __slots__ = ("now", "rings", "last_error", "last_failed", "errors")

    def __init__(self) -> None:
        self.now = Cell()
        self.rings: dict[float, Ring] = {RECENT_S: Ring(CELL_S, int(RECENT_S // CELL_S))}
        self.last_error: LastError | None = None
        self.last_failed = False  # the latest judged outcome was a failure
        self.errors = 0  # every failure since start

    def ring_for(self, window: float) -> Ring:
        ring = self.rings.get(window)
        if ring is None:
            size = cell_size(window)
            ring = self.rings[window] = Ring(size, max(1, int(window // size)))
        return ring

    def feed(self, now: float) -> None:
        cell, self.now = self.now, Cell()
        for ring in self.rings.values():
            ring.feed(now, cell)


class LiveStats:
    def __init__(self, targets: Iterable[str], models: Iterable[str],
                 clock: Callable[[], float] = time.time, errors_kept: int = 50,
                 on_failure: Iterable[Callable[["Exchange", "Attempt"], None]] = ()) -> None:
        """`on_failure`: told of each failed attempt (e.g. a refused credential's alert)."""
        self.clock = clock
        self.targets: dict[str, Series] = {label: Series() for label in targets}
        self.models: dict[str, Series] = {name: Series() for name in models}
        self.chart = Ring(CELL_S, CHART_CELLS)  # every request, gateway-wide
        self._chart_now = Cell()
        self.recent_errors: deque[dict] = deque(maxlen=errors_kept)
        self.closed_chart: list[tuple[float, Cell]] = []  # chart cells closed by the last tick
        self.on_failure = tuple(on_failure)

    def follow(self, targets: Iterable[str], models: Iterable[str]) -> None:
        """A reload's config: series for new targets and models, none for removed ones;
        those that stay keep their history."""
        wanted_t, wanted_m = set(targets), set(models)
        self.targets = {label: self.targets.get(label) or Series() for label in wanted_t}
        self.models = {name: self.models.get(name) or Series() for name in wanted_m}

    def window(self, scope: str, subject: str, seconds: float) -> Ring:
        """The ring an SLO reads (made on first use, fed from the next tick)."""
        series = (self.targets if scope == "target" else self.models).get(subject)
        if series is None:
            series = (self.targets if scope == "target" else self.models).setdefault(
                subject, Series())
        return series.ring_for(seconds)

    # --- the hot path ------------------------------------------------------------------

    def observe_attempt(self, ex: "Exchange", attempt: "Attempt") -> None:
        """Dispatcher observer: one upstream attempt ended."""
        series = self.targets.get(attempt.target.label)
        if series is None:
            return
        cell = series.now
        cell.hits += 1
        cls = attempt.error_class
        if cls is None:
            if attempt.status is None:
                return  # cancelled before any answer: no verdict
            cell.n += 1
            series.last_failed = False
            i = bucket((attempt.ended_ns - attempt.started_ns) / 1e6)
            cell.lat[i] = cell.lat.get(i, 0) + 1
            if attempt.first_token_ns:
                i = bucket((attempt.first_token_ns - attempt.started_ns) / 1e6)
                cell.ttft[i] = cell.ttft.get(i, 0) + 1
            return
        if cls in _TARGET_BAD:
            cell.n += 1
            cell.bad += 1
            series.last_failed = True
        series.errors += 1
        now = self.clock()
        series.last_error = LastError(now, attempt.status, cls.value)
        self.recent_errors.append({
            "at": now, "kind": "attempt", "target": attempt.target.label,
            "model": ex.model.name, "status": attempt.status, "error": cls.value,
            "request_id": ex.request_id})
        for listener in self.on_failure:
            listener(ex, attempt)

    def observe_request(self, ex: "Exchange", status: int, error: str,
                        seconds: float) -> None:
        """Told by the metrics policy as each request ends (status as the client saw it)."""
        series = self.models.get(ex.model.name)
        if series is None or status == 499:
            return  # the client left: neither good nor bad
        cell = series.now
        chart = self._chart_now
        cell.hits += 1
        chart.hits += 1
        cost = ex.cost
        if cost:
            chart.spend += cost
            cell.spend += cost
        if status >= 500:
            cell.n += 1
            cell.bad += 1
            chart.n += 1
            chart.bad += 1
            series.errors += 1
            series.last_error = LastError(self.clock(), status, error or "error")
        elif status < 400:
            i = bucket(seconds * 1000.0)
            cell.n += 1
            cell.lat[i] = cell.lat.get(i, 0) + 1
            chart.n += 1
            chart.lat[i] = chart.lat.get(i, 0) + 1
            attempt = ex.attempts[-1] if ex.attempts else None
            if attempt is not None and attempt.first_token_ns:
                j = bucket((attempt.first_token_ns - ex.started_ns) / 1e6)
                cell.ttft[j] = cell.ttft.get(j, 0) + 1
        if status >= 400:
            self.recent_errors.append({
                "at": self.clock(), "kind": "request", "model": ex.model.name,
                "target": ex.target.label if ex.target is not None else None,
                "status": status, "error": error or None, "request_id": ex.request_id})

    # --- once a second -------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for series in self.targets.values():
            series.feed(now)
        for series in self.models.values():
            series.feed(now)
        cell, self._chart_now = self._chart_now, Cell()
        self.closed_chart = self.chart.feed(now, cell)

    def summary(self, series: Series, now: float) -> dict:
        """The page's row values over the last minute."""
        ring = series.rings[RECENT_S]
        cell = ring.window()
        span = max(1.0, ring.span(now))
        judged = cell.n
        last = series.last_error
        return {
            "rps": round(cell.hits / span, 3),
            "error_rate": round(cell.bad / judged, 4) if judged else None,
            "p50_ms": _ms(quantile(cell.lat, 0.5)), "p95_ms": _ms(quantile(cell.lat, 0.95)),
            "ttft_p50_ms": _ms(quantile(cell.ttft, 0.5)),
            "ttft_p95_ms": _ms(quantile(cell.ttft, 0.95)),
            "errors_total": series.errors,
            "last_error": None if last is None else {"at": last.at, "status": last.status,
                                                     "error": last.error},
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
