"""The carry-over step of a reload: what the running Gateway hands the next one.

A reload builds a whole new Gateway from the new config (proxy/server/gateway.py,
the one composition root) and gives it, through a `Carried`, the parts that
must outlive a config: the process's metrics and traces, the shared state and
every store (rate-limit windows, budgets and their reservations, the ledger,
stored responses, the response cache, client keys made through the API), and
the per-upstream state of what did not change — a target's circuit breaker and
latency statistics, a provider's connections and credential pool, its last
health check. Nothing else is shared between generations: the old one keeps
serving the requests it started until they end, then closes what it alone had.

Unchanged means equal: a provider is unchanged when its whole config is (a
rotated key is a changed provider: new connections, fresh credential state); a
target (provider/model) is unchanged when it is still configured and its
provider is unchanged — its weight, limits and price may differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config.types import GatewayConfig
from proxy.engine.breakers import Breakers
from proxy.engine.credentials import CredentialPool


@dataclass(slots=True)
class Carried:
    """The process-wide parts are always handed on; the rest only where it did not
    change (a field left None, or a name missing from a mapping, is built fresh)."""

    generation: int
    policies: list[Any]  # the outer policies the app was built with (the access log)
    now: Any  # the budget clock
    metrics: Any
    tracing: Any
    shared: Any
    session: Any
    responses: Any
    keyring: Any
    alerts: Any  # the page and the alerts: process-wide, pointed at each generation
    live: Any
    sessions: Any
    watch: Any
    slo: Any = None  # kept while the SLOs are unchanged (their states and breaches)
    ledger: Any = None
    budget_store: Any = None
    cache_store: Any = None
    client_limits: Any = None
    target_limits: Any = None
    breakers: Breakers | None = None
    stats: Any = None
    tokens: Any = None  # tokens in flight per target (least_tokens), once counted
    transports: dict[str, Any] = field(default_factory=dict)
    pools: dict[str, CredentialPool] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    #: the targets (labels) whose breakers and statistics were dropped
    dropped_targets: list[str] = field(default_factory=list)

    @classmethod
    def take(cls, old: Any, new: GatewayConfig) -> "Carried":
        """What `old` (the running Gateway) hands a generation built from `new`."""
        config = old.config
        same = {name for name, provider in new.providers.items()
                if config.providers.get(name) == provider}
        labels = {t.label: t.provider for m in config.models.values() for t in m.targets}
        kept = {t.label for m in new.models.values() for t in m.targets
                if t.provider in same and t.label in labels}
        dropped = sorted(set(labels) - kept)
        budget = old.budget
        carried = cls(
            generation=old.generation + 1, policies=old.given_policies, now=old.now,
            metrics=old.metrics, tracing=old.tracing, shared=old.shared, session=old.session,
            responses=old.responses, keyring=old.keyring, alerts=old.alerts, live=old.live,
            sessions=old.sessions, watch=old.watch,
            slo=old.slo if config.slos == new.slos else None,
            ledger=budget.ledger if budget is not None else old.spare_ledger,
            budget_store=budget.store if budget is not None else None,
            client_limits=old.client_limits, target_limits=old.target_limits,
            transports={n: t for n, t in old.transports.items() if n in same},
            pools={n: p for n, p in old.dispatcher.pools.items() if n in same},
            health={n: r for n, r in old.health.results.items() if n in same},
            tokens=old.dispatcher.tokens,
            dropped_targets=dropped)
        if old.cache is not None and (config.cache.ttl, config.cache.max_entries) == \
                (new.cache.ttl, new.cache.max_entries):
            carried.cache_store = old.cache.store
        carried.stats = old.dispatcher.stats.keep_only(kept)
        if config.routing.breaker == new.routing.breaker:
            carried.breakers = old.dispatcher.breakers.keep_only(kept)
        return carried
