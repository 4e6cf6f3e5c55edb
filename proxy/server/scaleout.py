"""Wiring the shared state (`state.backend: redis`, `state.ledger: postgresql://…`)
into a Gateway, so proxy/server/gateway.py only asks for stores and never branches much.
"""

from __future__ import annotations

import logging
from typing import Any

from policies.budget import Budget, period_label
from proxy.engine.breakers import OPEN, Breakers
from proxy.config.types import GatewayConfig
from proxy.core.exchange import Attempt, Exchange
from proxy.engine.live import CELL_S, CHART_CELLS
from proxy.state.events import EventBus
from proxy.state.series_redis import SharedChart
from proxy.state.sessions import RedisSessions
from proxy.state.token_load_redis import RedisTokenLoad
from proxy.state.stores_redis import (
    RedisBudgetStore,
    RedisCacheStore,
    RedisCounterStore,
    RedisRateStore,
    RedisState,
    SharedStatsStore,
)

log = logging.getLogger("gatewise.state")


class SharedState:
    def __init__(self, config: GatewayConfig) -> None:
        state = config.state
        self.config = config
        self.redis = RedisState(state.url, state.prefix, state.instances)
        self.events = EventBus(self.redis)  # reloads and key changes reach every instance
        self.budgets: RedisBudgetStore | None = None
        self.budget: Budget | None = None
        self.stats: SharedStatsStore | None = None
        self._hooked = False

    # --- stores ------------------------------------------------------------------------

    def cache_store(self) -> RedisCacheStore:
        return RedisCacheStore(self.redis, self.config.cache.ttl)

    def client_stores(self) -> tuple[RedisRateStore, RedisCounterStore]:
        return RedisRateStore(self.redis), RedisCounterStore(self.redis)

    def target_store(self) -> RedisRateStore:
        """Dispatcher gates are synchronous: per-target limits run at limit ÷ instances."""
        return RedisRateStore(self.redis)

    def budget_store(self) -> RedisBudgetStore:
        self.budgets = RedisBudgetStore(
            self.redis, fail_open=self.config.state.budgets_on_outage == "fail_open",
            hold_ttl_s=self.config.timeouts.total + 60)
        return self.budgets

    def stats_store(self) -> SharedStatsStore:
        """Target statistics whose cool-downs every instance sees."""
        labels = [t.label for m in self.config.models.values() for t in m.targets]
        return SharedStatsStore(self.redis, labels)

    def chart_store(self) -> SharedChart:
        """The page's charts: every instance's hour, added together in Redis."""
        return SharedChart(self.redis, CELL_S, CHART_CELLS)

    def sessions(self) -> RedisSessions:
        """Page sessions every instance and worker knows."""
        return RedisSessions(self.redis)

    def token_load(self) -> RedisTokenLoad:
        """Tokens in flight: counted locally, every instance's read on each tick."""
        tokens = RedisTokenLoad(self.redis)
        self.redis.on_tick.append(tokens.publish)
        return tokens

    def bind(self, config: GatewayConfig, stats: SharedStatsStore, budget: Budget | None) -> None:
        """Budget rebuilds when Redis comes back empty; provider budget refresh; polling
        shared cool-downs. Bound again by each generation a reload makes: the hooks,
        added once, always serve the current one."""
        self.config, self.stats, self.budget = config, stats, budget
        stats.labels = sorted({t.label for m in config.models.values() for t in m.targets})
        if not self._hooked:
            self._hooked = True
            self.redis.on_tick.append(self._poll_stats)
            self.redis.on_empty.append(self._reseed)
            self.redis.on_tick.append(self._refresh_provider_budgets)

    async def _poll_stats(self) -> None:
        await self.stats.poll()

    async def _reseed(self) -> None:
        if self.budget is not None:
            await self.budget.reseed()

    def open_breaker_observer(self, breakers: Breakers, stats: SharedStatsStore) -> Any:
        """An attempt observer: a breaker that opens here cools the target down on
        every instance for as long as the breaker stays open."""
        def share_open_breaker(ex: Exchange, attempt: Attempt) -> None:
            label = attempt.target.label
            if attempt.error_class is not None and breakers.state(label) == OPEN:
                wait = breakers.get(label).retry_in()
                if wait > 0 and stats.cooling(label) < wait:
                    stats.cool_down(label, wait)

        return share_open_breaker

    async def _refresh_provider_budgets(self) -> None:
        budget = self.budget
        if budget is None or not self.config.budgets.providers:
            return
        now = budget.now()
        await self.budgets.refresh(f"provider:{name}:{period_label(b.per, now)}"
                                   for name, b in self.config.budgets.providers.items())

    async def start(self) -> None:
        await self.redis.start()
        self.events.start()

    async def close(self) -> None:
        await self.events.close()
        await self.redis.close()

    def status(self) -> dict[str, str]:
        return {"backend": "redis", "redis": "ok" if self.redis.up else "unreachable"}
