"""What the page shows, built from the gateway's parts once per tick (never per view).

Every state is a word as well as a colour: `up` (green), `degraded` (amber),
`down` (red), each with the reason in words, so the page reads the same to
someone who cannot tell red from green.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from policies.budget import period_label
from proxy.engine.breakers import HALF_OPEN, OPEN
from proxy.engine.live import CELL_S, CHART_CELLS, LiveStats
from proxy.state.ledger import GROUPS, SqliteLedger, connect, period_start, query_report
from proxy.state.series import Cell, quantile

if TYPE_CHECKING:
    from policies.budget import Budget
    from proxy.config.types import GatewayConfig
    from proxy.engine.dispatch import Dispatcher
    from proxy.engine.health import HealthChecker

GREEN, AMBER, RED = "up", "degraded", "down"


def target_rows(config: "GatewayConfig", dispatcher: "Dispatcher", health: "HealthChecker",
                live: LiveStats, breached: set[str], now: float) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for model in config.models.values():
        for target in model.targets:
            label = target.label
            if label in rows:
                rows[label]["models"].append(model.name)
                continue
            provider = config.providers[target.provider]
            breaker = dispatcher.breakers.state(label)
            healthy = health.status(target.provider)
            stats = dispatcher.stats.get(label)
            series = live.targets.get(label)
            summary = live.summary(series, now) if series is not None else {}
            cooling = dispatcher.stats.cooling(label) if hasattr(dispatcher.stats, "cooling") \
                else 0.0
            state, reason = _target_state(provider.enabled, provider.disabled_reason, healthy,
                                          breaker, cooling, label in breached,
                                          series.last_failed if series is not None else False)
            if breaker == OPEN:
                reason += f" (retry in {dispatcher.breakers.get(label).retry_in():.0f} s)"
            rows[label] = {"target": label, "provider": target.provider, "model": target.model,
                           "models": [model.name], "state": state, "reason": reason,
                           "breaker": breaker, "health": healthy, "in_flight": stats.in_flight,
                           **summary}
    return list(rows.values())


def _target_state(enabled: bool, disabled: str | None, healthy: bool | None, breaker: str,
                  cooling: float, breached: bool, last_failed: bool) -> tuple[str, str]:
    if not enabled:
        return RED, f"provider disabled: {disabled}"
    if healthy is False:
        return RED, "health check failing"
    if breaker == OPEN:
        return RED, "circuit breaker open"
    if breaker == HALF_OPEN:  # not proven again until a probe succeeds
        return RED, "circuit breaker half-open: the next request probes it"
    if cooling > 0:
        return AMBER, f"cooling down after a rate limit ({cooling:.0f} s)"
    if breached:
        return AMBER, "SLO breached"
    if last_failed:
        return AMBER, "the latest attempt failed"
    return GREEN, "serving" if healthy is None else "serving, health check passing"


def model_rows(config: "GatewayConfig", live: LiveStats, targets: list[dict[str, Any]],
               breached: set[str], now: float) -> list[dict[str, Any]]:
    by_label = {row["target"]: row for row in targets}
    rows = []
    for model in config.models.values():
        states = [by_label[t.label]["state"] for t in model.targets if t.label in by_label]
        if states and all(s == RED for s in states):
            state, reason = RED, "no target can serve"
        elif any(s != GREEN for s in states):
            down = sum(s != GREEN for s in states)
            state, reason = AMBER, f"{down} of {len(states)} target(s) not fully up"
        else:
            state, reason = GREEN, "serving"
        if model.name in breached and state == GREEN:
            state, reason = AMBER, "SLO breached"
        series = live.models.get(model.name)
        rows.append({"model": model.name, "strategy": model.strategy, "state": state,
                     "reason": reason, "targets": [t.label for t in model.targets],
                     **(live.summary(series, now) if series is not None else {})})
    return rows


def budget_rows(config: "GatewayConfig", budget: "Budget | None",
                now: float) -> list[dict[str, Any]]:
    if budget is None:
        return []
    now = budget.now()  # the budget's own clock decides its periods
    found = []
    if config.budgets.global_ is not None:
        found.append(("global", "the gateway", config.budgets.global_))
    for name, b in config.budgets.providers.items():
        found.append((f"provider:{name}", f"provider {name}", b))
    for key in config.keys:
        if key.budget is not None:
            found.append((f"key:{key.name}", f"key {key.name}", key.budget))
    rows = []
    for prefix, who, b in found:
        scope = f"{prefix}:{period_label(b.per, now)}"
        spent, held = budget.store.used(scope)
        fraction = spent / b.usd if b.usd > 0 else (1.0 if spent > 0 else 0.0)
        crossed = [t for t in b.thresholds if fraction >= t]
        if fraction >= 1.0:
            state, reason = RED, "exhausted: requests are refused"
        elif crossed and crossed[-1] == b.thresholds[-1]:
            state, reason = RED, f"past {crossed[-1]:.0%}"
        elif crossed:
            state, reason = AMBER, f"past {crossed[-1]:.0%}"
        else:
            state, reason = GREEN, "within budget"
        rows.append({"scope": scope, "who": who, "per": b.per, "usd": b.usd,
                     "spent_usd": round(spent, 6), "held_usd": round(held, 6),
                     "fraction": round(fraction, 4), "thresholds": list(b.thresholds),
                     "state": state, "reason": reason})
    return rows


def point(cell: Cell) -> tuple:
    """One 10 s cell as the charts draw it: (requests/s, p95 ms, USD, error share)."""
    if cell.empty:
        return (0.0, None, 0.0, 0.0)
    p95 = quantile(cell.lat, 0.95)
    return (round(cell.hits / CELL_S, 3), None if p95 is None else round(p95, 1),
            round(cell.spend, 8), round(cell.bad / cell.n, 4) if cell.n else 0.0)


_EMPTY = (0.0, None, 0.0, 0.0)


def chart(points: dict[float, tuple], end: float) -> dict[str, Any]:
    """Requests/s, p95 latency (ms), spend (USD) and error share per 10 s over the
    hour ending with the cell that starts at `end`."""
    start = end - CELL_S * (CHART_CELLS - 1)
    rows = [points.get(start + i * CELL_S, _EMPTY) for i in range(CHART_CELLS)]
    return {"start": start, "step_s": CELL_S, "rps": [r[0] for r in rows],
            "p95_ms": [r[1] for r in rows], "spend_usd": [r[2] for r in rows],
            "error_rate": [r[3] for r in rows]}


class SpendReader:
    """Spend today and this month by key, model and provider, from the ledger.

    A SQLite file is read through its own read-only connection on its own thread
    (WAL lets readers run beside the writer), so the page never queues behind
    ledger writes; other ledgers answer through their own `report`."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        ledger = getattr(ledger, "inner", ledger)  # (a WatchedLedger wraps it)
        self._file = isinstance(ledger, SqliteLedger) and ledger.path != ":memory:"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatewise-ui") \
            if self._file else None
        self._conn = None

    async def read(self, now: float) -> dict[str, Any]:
        periods = {p: period_start(p, now) for p in ("day", "month")}
        if self._executor is not None:
            await self.ledger.flush()  # what is settled so far is committed, then read
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._read_file, periods)
        out: dict[str, Any] = {}
        for period, since in periods.items():
            out[period] = {by: await self.ledger.report(by, since) for by in GROUPS}
        return _totals(out)

    def _read_file(self, periods: dict[str, float]) -> dict[str, Any]:
        if self._conn is None:
            self._conn = connect(self.ledger.path, readonly=True)
        return _totals({period: {by: query_report(self._conn, by, since) for by in GROUPS}
                        for period, since in periods.items()})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _totals(out: dict[str, Any]) -> dict[str, Any]:
    for period in out.values():
        rows = period.get("key") or []
        period["total_usd"] = round(sum(r["cost_usd"] for r in rows), 8)
        period["requests"] = sum(r["requests"] for r in rows)
    return out
