"""The once-a-second loop behind the page and the alerts.

Each tick moves the live statistics on, judges every SLO, turns breaker and
health changes into events, and — only while someone has the page open —
rebuilds the page's JSON once, so a view costs a dictionary read whatever the
traffic. Spend is read from the ledger every few seconds while the page is
open (less often when the ledger is slow to answer), never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import orjson

from proxy import __version__
from proxy.engine.breakers import CLOSED, OPEN
from proxy.engine.live import CELL_S, CHART_CELLS, LiveStats
from proxy.engine.slo import BREACH, SloEvaluator
from proxy.server.alerts import AlertHub
from proxy.server.snapshot import (SpendReader, budget_rows, chart, model_rows, point,
                                   target_rows)

if TYPE_CHECKING:
    from policies.budget import Budget
    from proxy.config.types import GatewayConfig
    from proxy.engine.dispatch import Dispatcher
    from proxy.engine.health import HealthChecker
    from proxy.state.series_redis import SharedChart

log = logging.getLogger("gatewise.ui")
WATCHED_S = 10.0  # the page counts as open this long after its last poll


class Watch:
    def __init__(self, config: "GatewayConfig", live: LiveStats, slo: SloEvaluator,
                 hub: AlertHub, dispatcher: "Dispatcher", health: "HealthChecker",
                 budget: "Budget | None" = None, shared: "SharedChart | None" = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.live, self.slo, self.hub, self.clock = config, live, slo, hub, clock
        self.dispatcher, self.health, self.budget, self.shared = dispatcher, health, budget, \
            shared
        self.tick_s = 1.0
        self.spend_every = 5.0
        self.body = b"{}"
        self.etag = '"0"'
        self.built_at = 0.0
        self._version = 0
        self._watched_until = 0.0
        self._breakers: dict[str, str] = {}
        self._health: dict[str, bool | None] = {}
        self._points: dict[float, tuple] = {}
        self._pulled = False
        self._sharing = False
        self._to_push: list = []
        self._spend: dict[str, Any] | None = None
        self._spend_error: str | None = None
        self._spend_due = 0.0
        self._reader = SpendReader(budget.ledger) if budget is not None \
            and budget.ledger is not None else None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None

    def follow(self, config: "GatewayConfig", slo: SloEvaluator, dispatcher: "Dispatcher",
               health: "HealthChecker", budget: "Budget | None") -> None:
        """A reload's generation takes over: the page shows its config, targets and
        budgets from the next tick (the ledger, and so the spend reader, stay)."""
        self.config, self.slo, self.dispatcher, self.health, self.budget = \
            config, slo, dispatcher, health, budget

    # --- events ------------------------------------------------------------------------

    def _transitions(self) -> None:
        breakers = self.dispatcher.breakers
        for label in self.live.targets:
            state = breakers.state(label)
            opened = state != CLOSED
            was = self._breakers.get(label, CLOSED) != CLOSED
            self._breakers[label] = state
            if opened and not was:
                self.hub.emit("breaker_open", label, f"circuit breaker of {label} opened: "
                              "its requests go to other targets", {"target": label,
                                                                  "breaker": state})
            elif was and not opened:
                self.hub.emit("breaker_closed", label, f"circuit breaker of {label} closed: "
                              "the target serves again", {"target": label, "breaker": state})
        for name in self.health.checks:
            now = self.health.status(name)
            was = self._health.get(name)
            self._health[name] = now
            if now is False and was is not False:
                detail = self.health.results[name].detail if name in self.health.results else ""
                self.hub.emit("health_down", name, f"provider '{name}' fails its health "
                              f"check: {detail}", {"provider": name, "detail": detail})
            elif now is True and was is False:
                self.hub.emit("health_up", name, f"provider '{name}' passes its health "
                              "check again", {"provider": name})

    # --- the tick ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.live.tick(now)
        self.slo.evaluate(now)
        self._transitions()
        closed = self.live.closed_chart
        for start, cell in closed:
            self._points[start] = point(cell)
        if closed:  # the charts show one hour: older points go
            oldest = closed[-1][0] - CELL_S * CHART_CELLS
            for start in [s for s in self._points if s <= oldest]:
                del self._points[start]
        if self.shared is not None:
            self._to_push = (self._to_push + closed)[-360:]  # (Redis away: the last hour)
            if not self._sharing and (self._to_push or (self.watched(now) and not self._pulled)):
                self._sharing = True
                self._spawn(self._share(now))
        if self.watched(now):
            if self._reader is not None and now >= self._spend_due:
                self._spend_due = float("inf")  # until this read ends
                self._spawn(self._read_spend(now))
            self.build(now)

    def watched(self, now: float) -> bool:
        return now < self._watched_until

    def touch(self) -> None:
        """A page view: keep the page fresh for a while; build now if it went stale."""
        now = self.clock()
        was = self.watched(now)
        self._watched_until = now + WATCHED_S
        if not was:
            self._pulled = False  # the shared hour is read afresh
            if self._reader is not None and self._spend_due != float("inf"):
                self._spend_due = float("inf")  # until this read ends
                self._spawn(self._read_spend(now))
        if now - self.built_at > 2 * self.tick_s:
            self.build(now)

    def build(self, now: float) -> None:
        breached = {st.config.subject for st in self.slo.states if st.state == BREACH}
        targets = target_rows(self.config, self.dispatcher, self.health, self.live, breached, now)
        live_chart = self.live.chart
        points = dict(self._points)
        if live_chart.open_at is not None and self.shared is None:
            points[live_chart.open_at] = point(live_chart.open)
        end = live_chart.open_at if live_chart.open_at is not None else now - now % 10
        body = {
            "generated_at": now, "gateway": self.hub.gateway, "version": __version__,
            "models": model_rows(self.config, self.live, targets, breached, now),
            "targets": targets,
            "budgets": budget_rows(self.config, self.budget, now),
            "spend": self._spend, "spend_error": self._spend_error,
            "slos": self.slo.snapshot(),
            "alerts": self.hub.listing(25), "alert_stats": self.hub.stats(),
            "alert_sinks": [s.where for s in self.hub.senders],
            "errors": list(reversed(self.live.recent_errors))[:25],
            "charts": chart(points, end), "shared_charts": self.shared is not None,
        }
        self._version += 1
        self.body = orjson.dumps(body)
        self.etag = f'"{self._version}"'
        self.built_at = now

    # --- background reads --------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_spend(self, now: float) -> None:
        began = time.perf_counter()
        try:
            self._spend = await self._reader.read(now)
            self._spend_error = None
        except Exception as exc:  # noqa: BLE001 — the page says so; serving goes on
            self._spend_error = f"the ledger could not be read: {type(exc).__name__}"
        took = time.perf_counter() - began
        # a slow ledger is asked less often: at most ~5 % of the time reading it
        self._spend_due = self.clock() + max(self.spend_every, 20 * took)

    async def _share(self, now: float) -> None:
        try:
            async with asyncio.timeout(2.0):
                if self._to_push:
                    cells = self._to_push
                    await self.shared.push(cells)
                    self._to_push = self._to_push[len(cells):]
                if not self.watched(now):
                    return
                ends = self.live.chart.open_at or now
                back = 360 if not self._pulled else 3
                starts = [ends - 10 * k for k in range(1, back + 1)]
                found = await self.shared.pull(starts)
                self._pulled = True
                for start in starts:
                    if start in found:
                        self._points[start] = point(found[start])
        except Exception as exc:  # noqa: BLE001 — Redis away: the local hour is shown
            log.debug(f"shared chart: {exc!r}")
        finally:
            self._sharing = False

    # --- lifecycle ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s - self.clock() % self.tick_s)
            try:
                self.tick()
            except Exception:  # pragma: no cover - logged; the next tick tries again
                log.exception("dashboard tick failed")

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run(), name="gatewise-watch")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reader is not None:
            self._reader.close()
