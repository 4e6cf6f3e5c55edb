"""The application object and the one composition root: everything a running
gateway owns, built here and nowhere else.

No mutable state lives outside it: config, the upstream session, one transport
per provider, the stores, the pipeline. Each part gets what it consults in its
constructor (the dispatcher its gates, observers, statistics and breakers), so
nothing is patched in afterwards. Tests build as many as they like side by side.

A reload builds the next generation here too, from the new config and what the
running one hands over (`Carried`, proxy/server/carry.py): each part below is
taken from it when it is there, and built otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from policies.accesslog import AccessLog
from policies.auth import AdminAuth, Auth
from policies.budget import Budget
from policies.cache import build_cache, upstream_fingerprints
from policies.metrics import Metrics
from policies.ratelimit import ClientRateLimit, TargetRateLimit
from policies.routes import Routes
from policies.tracing import build_tracing
from proxy.config.policies import KeyConfig, hash_key
from proxy.config.routes import ADMIN_KEY_NAME
from proxy.config.types import GatewayConfig
from proxy.core.exchange import Exchange
from proxy.core.pipeline import Pipeline, Policy
from proxy.engine.breakers import Breakers
from proxy.engine.credentials import build_pools
from proxy.engine.dispatch import AttemptObserver, Dispatcher, TargetGate
from proxy.engine.health import HealthChecker
from proxy.engine.live import LiveStats
from proxy.engine.slo import SloEvaluator
from proxy.engine.rules import RuleTable
from proxy.server.alerts import AlertHub
from proxy.server.carry import Carried
from proxy.server.lifecycle import Lifecycle
from proxy.server.watch import Watch
from proxy.core.errors import StartupError
from proxy.server.keyring import KeyRing, build_store
from proxy.state.ledger import LedgerStore, SqliteLedger
from proxy.state.ledger_watch import WatchedLedger
from proxy.state.responses_store import ResponseStore, SqliteResponses
from proxy.state.sessions import MemorySessions
from proxy.state.route_stats import TokenLoad
from proxy.state.stores import Clock, wall_clock
from proxy.state.target_stats import MemoryStatsStore
from translators import PROVIDER_TYPES

log = logging.getLogger("gatewise")

REQUEST_ID = web.RequestKey("request_id", str)
#: set once a request enters the pipeline: its access-log line and metrics are the policies'
EXCHANGE = web.RequestKey("exchange", Exchange)


def _response_store(config: GatewayConfig) -> ResponseStore:
    """Stored responses live with the ledger: PostgreSQL, its SQLite file, or memory.
    PostgreSQL is imported here, late: asyncpg is an optional dependency."""
    retention = config.responses.retention
    if config.state.postgres is not None:
        from proxy.state.responses_pg import PostgresResponses

        return PostgresResponses(config.state.postgres, retention)
    return SqliteResponses(config.state.ledger or ":memory:", retention)


def _keyring(config: GatewayConfig, shared: Any) -> KeyRing | None:
    """The key API's store beside a persistent ledger, with Redis to spread changes."""
    store = build_store(config)
    return KeyRing(store, shared.events if shared is not None else None) if store else None


def _shared_state(config: GatewayConfig) -> Any:
    """The Redis/PostgreSQL wiring (proxy/server/scaleout.py), or None on memory.
    Imported here, late, because redis and asyncpg are optional dependencies."""
    if config.state.backend != "redis":
        return None
    from proxy.server.scaleout import SharedState

    return SharedState(config)


class Gateway(Lifecycle):
    def __init__(self, config: GatewayConfig, policies: list[Policy] | None = None,
                 now: Clock = wall_clock, carried: Carried | None = None) -> None:
        """`carried`: what the running generation hands over on a reload (None: the
        first generation, which builds everything)."""
        self.config = config
        self.carried = carried
        self.generation = carried.generation if carried else 1
        given = self.given_policies = carried.policies if carried else list(policies or [])
        self.now = now = carried.now if carried else now
        shared = self.shared = carried.shared if carried else _shared_state(config)
        self.transports: dict[str, Any] = dict(carried.transports) if carried else {}
        self.session = carried.session if carried else None
        self.health = HealthChecker(config, PROVIDER_TYPES, self.transports)
        if carried:
            self.health.results.update(carried.health)
        # The page, the SLOs and the alerts outlive a reload; each generation points
        # them at its own config when it takes over (`bind`).
        self.alerts = carried.alerts if carried else AlertHub(config.alerts, config.secrets())
        labels = dict.fromkeys(t.label for m in config.models.values() for t in m.targets)
        self.live = carried.live if carried else \
            LiveStats(labels, config.models, on_failure=[self.alerts.upstream_auth])
        self.slo = carried.slo if carried and carried.slo is not None else \
            SloEvaluator(config.slos, self.live, emit=self.alerts.emit)
        # The page and the SLOs read per-request statistics; without either nobody would.
        self.watching = bool(config.slos) or self.ui_enabled
        self.metrics = carried.metrics if carried else Metrics(  # always on, cheap
            config, on_record=self.live.observe_request if self.watching else None,
            gauges=[self.slo.gauges] if config.slos else ())
        # None when off: not in the chain
        self.tracing = carried.tracing if carried else build_tracing(config)
        cache_store = carried.cache_store if carried else None
        self.cache = build_cache(config.cache, cache_store or (
            shared.cache_store() if shared else None),
            upstream_fingerprints(config.models, config.providers))
        self.responses = carried.responses if carried else _response_store(config)
        # client keys made through the admin API (None: the ledger is in memory)
        self.keyring = carried.keyring if carried else _keyring(config, shared)
        self._tasks: set[asyncio.Task] = set()
        access = self._access_policies(now)
        gates, observers = self._dispatch_hooks()
        breakers = carried.breakers if carried and carried.breakers else \
            Breakers(config.routing.breaker, on_change=self.metrics.set_breaker_state)
        stats = carried.stats if carried else (
            shared.stats_store() if shared else MemoryStatsStore())
        if shared is not None:
            observers.append(shared.open_breaker_observer(breakers, stats))
        adaptive = any(slo.adaptive for slo in config.slos)
        pools = build_pools(config.providers, carried.pools if carried else None)
        for pool in pools.values():
            pool.on_cool = self.metrics.credential_cooled
        self.dispatcher = Dispatcher(config.providers, PROVIDER_TYPES, self.transports,
                                     models=config.models, routing=config.routing,
                                     timeouts=config.timeouts, provider_health=self.health.status,
                                     gates=gates, observers=observers, stats=stats,
                                     breakers=breakers, tokens=self._token_load(),
                                     penalty=self.slo.penalty if adaptive else None, pools=pools)
        self.sessions = carried.sessions if carried else \
            ((shared.sessions() if shared else MemorySessions()) if self.ui_enabled else None)
        self.watch = carried.watch if carried else \
            Watch(config, self.live, self.slo, self.alerts, self.dispatcher, self.health,
                  self.budget, shared.chart_store() if shared else None)
        for name in self._affinity_models():  # rings built now, not on a first request
            self.dispatcher.router.affinity.ring(name)
        #: the access log of requests that never reach the pipeline (the policy's own
        #: when it is in the chain)
        self.access_log = next((p for p in given if isinstance(p, AccessLog)), AccessLog())
        self.in_flight = 0  # data-plane requests on this generation (the middleware counts)
        self.requests = 0  # every request pinned to it (proxy/server/live.py)
        self.policies: list[Policy] = self._with_observability(given + access)
        self._pipeline = Pipeline(self.policies, self.dispatcher)
        #: requests inside the pipeline, by the task serving each (a shutdown ends them)
        self.open: dict[asyncio.Task, Exchange] = {}
        self._lag: asyncio.Task | None = None  # the event-loop lag sampler
        created = int(time.time())
        self.model_entries = {name: {"id": name, "object": "model", "created": created,
                                     "owned_by": "gatewise"} for name in config.models}
        self.models_body = orjson.dumps({"object": "list",
                                         "data": list(self.model_entries.values())})

    async def pipeline(self, ex: Exchange) -> None:
        """Run the policies and the dispatcher for one request, tracked while it runs so
        a shutdown can end it with an error the client can read (`ex.interrupt`)."""
        task = asyncio.current_task()
        self.open[task] = ex
        if isinstance(ex.http, web.BaseRequest):  # (an embedding program may pass none)
            ex.http[EXCHANGE] = ex
        try:
            await self._pipeline(ex)
        except asyncio.CancelledError:
            if ex.interrupt is None:
                raise  # the client left
            task.uncancel()
            if ex.response is None:
                raise ex.interrupt from None  # nothing sent yet: a plain 503
        finally:
            del self.open[task]

    def interrupt(self, error: Any) -> int:
        """End every request still in the pipeline: streams get `error` as their last
        event, the rest answer it. Returns how many were cut."""
        if self.budget is not None:
            self.budget.closing = True  # these cancels are the gateway's, not the clients'
        cut = 0
        for task, ex in list(self.open.items()):
            if ex.interrupt is None and not task.done():
                ex.interrupt = ex.error = error  # the ledger row says why it ended
                task.cancel()
                cut += 1
        return cut

    def _with_observability(self, given: list[Policy]) -> list[Policy]:
        """The order: the access log outermost, then metrics and the server
        span, then the given policies (auth → rate limit → budget), the cache last."""
        outer = [p for p in given if isinstance(p, AccessLog)]
        inner = [p for p in given if not isinstance(p, AccessLog)]
        telemetry: list[Policy] = [self.metrics.policy]
        if self.tracing is not None:
            telemetry.append(self.tracing.policy)
        cache: list[Policy] = [self.cache] if self.cache is not None else []
        return [*outer, *telemetry, *inner, *cache]

    def _strategies(self) -> set[str]:
        return {m.strategy for m in self.config.models.values()} | {
            r.strategy.name for r in self.config.routes if r.strategy is not None}

    def _token_load(self) -> TokenLoad | None:
        """Tokens in flight are counted only when a strategy balances by them (and once
        counted, the count goes on across reloads: requests in flight give theirs back)."""
        if self.carried is not None and self.carried.tokens is not None:
            return self.carried.tokens
        if "least_tokens" not in self._strategies():
            return None
        return self.shared.token_load() if self.shared is not None else TokenLoad()

    def _affinity_models(self) -> list[str]:
        config = self.config
        names = {n for n, m in config.models.items() if m.strategy == "affinity"}
        for rule in config.routes:
            if rule.strategy is not None and rule.strategy.name == "affinity":
                names.update([rule.model] if rule.model else
                             rule.subsets or rule.match.models or config.models)
        return sorted(names)

    def _access_policies(self, now: Clock) -> list[Policy]:
        """Routes → auth → client rate limit → budget, each only when the config asks for
        it, so an open gateway pays nothing for them. The admin key, when set, may call
        the data plane too, as the key named 'admin' (compared like every client key).
        Their stores (windows, spend, the ledger) are the running generation's on a reload."""
        config, shared, carried = self.config, self.shared, self.carried
        index = self.keyring.index if self.keyring is not None else None
        admin = self.admin_identity = (KeyConfig(name=ADMIN_KEY_NAME,
                                                 digest=hash_key(config.admin_key))
                                       if config.admin_key else None)
        self.auth = Auth(config.keys, index, also=(admin,) if admin else ()) \
            if config.keys or index is not None else None
        self.routes = (Routes(RuleTable(config.routes), config.models, config.tasks, admin)
                       if config.routes or config.tasks or admin else None)
        self.admin_auth = AdminAuth(config.admin_key, [k.digest for k in config.keys], index)
        self.client_limits = carried.client_limits if carried else None
        if self.client_limits is None and (index is not None
                                           or any(k.limited for k in config.keys)):
            self.client_limits = ClientRateLimit(*(shared.client_stores() if shared else ()))
        self.budget: Budget | None = None
        #: kept for the next generation even while no budget uses it
        self.spare_ledger = carried.ledger if carried else None
        if (config.state.ledger is not None or config.state.postgres is not None
                or config.budgets.any or any(k.budget is not None for k in config.keys)
                or self.spare_ledger is not None):  # (once open, the ledger keeps its owner)
            ledger = self.spare_ledger or WatchedLedger(self._ledger(), self.alerts.ledger_failed)
            store = (carried.budget_store if carried else None) or (
                shared.budget_store() if shared else None)
            self.budget = Budget(config, ledger, store=store, now=now,
                                 alert=self.alerts.budget_alert,
                                 more_keys=index.keys if index is not None else None)
        self.target_limits: TargetRateLimit | None = carried.target_limits if carried else None
        if self.target_limits is None and \
                TargetRateLimit.needed(t for m in config.models.values() for t in m.targets):
            self.target_limits = TargetRateLimit(shared.target_store() if shared else None)
        return [p for p in (self.routes, self.auth, self.client_limits, self.budget)
                if p is not None]

    def _ledger(self) -> LedgerStore:
        """The ledger `state.ledger` names, whatever the state backend: PostgreSQL,
        a SQLite file, or (none set) SQLite in memory. Never silently another."""
        state = self.config.state
        if state.postgres is not None:
            try:
                from proxy.state.ledger_pg import PostgresLedger  # asyncpg is optional
            except ImportError:
                raise StartupError("state.ledger is a postgresql:// URL, but asyncpg is not "
                                   "installed: pip install 'gatewise[postgres]'") from None
            return PostgresLedger(state.postgres, stale_after=self.config.timeouts.total + 60)
        if self.shared is not None:
            log.warning("state.backend is redis but the ledger is not on PostgreSQL: each "
                        "instance keeps its own ledger, and a Redis that comes back empty can "
                        "only be rebuilt from this instance's rows")
        return SqliteLedger(state.ledger or ":memory:", durability=state.durability)

    async def _shutting_down(self, app: web.Application) -> None:
        """Requests cancelled from here on were not abandoned by their clients."""
        if self.budget is not None:
            self.budget.closing = True

    def _dispatch_hooks(self) -> tuple[list[TargetGate], list[AttemptObserver]]:
        """What the dispatcher asks before each attempt (gates) and tells after it
        (observers), in a fixed order: metrics, tracing, budget, per-target limits."""
        gates: list[TargetGate] = []
        observers: list[AttemptObserver] = [self.metrics.observe_attempt]
        if self.watching:
            observers.append(self.live.observe_attempt)
        if self.tracing is not None:
            observers.append(self.tracing.observe_attempt)
        if self.budget is not None and self.config.budgets.providers:
            gates.append(self.budget.gate)
            observers.append(self.budget.observe)
        if self.target_limits is not None:
            gates.append(self.target_limits.gate)
            observers.append(self.target_limits.observe)
        return gates, observers

    def authenticate(self, headers: Any) -> Any:
        """The caller's KeyConfig (401 if keys are configured and none matches), else None."""
        auth = self.auth
        return auth.identify(headers) if auth is not None and auth.required else None

    def state_status(self) -> dict[str, str] | None:
        """The shared state's health for /health/ready (None with the memory backend)."""
        return self.shared.status() if self.shared is not None else None

    @property
    def ui_enabled(self) -> bool:
        """The page is served whenever an admin key is set, unless `admin.ui: false`."""
        return bool(self.config.admin_key) and self.config.ui

    @property
    def session_open(self) -> bool:
        return self.session is not None and not self.session.closed

GATEWAY = web.AppKey("gateway", Gateway)
