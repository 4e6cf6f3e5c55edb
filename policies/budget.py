"""Budgets and the spend ledger: a reservation before the call, the real cost after.

Before dispatch the most the request can cost (prompt estimate + `n` × the
output cap at the priciest target it may reach, fallbacks included) is held,
atomically, in the key's and the global budget; a provider's budget is held by
a dispatcher gate once the target is known. A pending ledger row is made
durable before anything goes upstream; a ledger that cannot write refuses the
request with a 503. Afterwards — success, error, client disconnect
(CancelledError) alike — the hold is replaced by what every attempt cost and
the rows are written, in a `finally` that does its bookkeeping synchronously,
so nothing can interrupt it. A cost above the reservation is recorded in full:
the key is then over its budget and refused until the period ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from proxy.config.policies import BudgetConfig, KeyConfig
from proxy.config.types import GatewayConfig, TargetConfig
from proxy.core.ids import time_ordered_hex
from proxy.core.errors import GatewayError, StartupError, UpstreamError, ledger_unavailable
from proxy.core.exchange import Attempt, BudgetBlock, Exchange, ProviderHold
from proxy.state.ledger import LedgerStore, LedgerUnavailable, Outcome, Pending, SpendRow, period_start
from proxy.state.ledger_rows import request_rows
from proxy.core.pipeline import CallNext
from proxy.core.pricing import asked_fallbacks, is_free, max_cost, reachable
from proxy.state.stores import BudgetStore, Clock, MemoryBudgetStore, wall_clock

log = logging.getLogger("gatewise.budget")
Alert = Callable[[dict], Awaitable[None]]
_HINT_RANK = {None: 0, "cheaper": 1, "free_only": 2}
#: a reservation's id, its ledger row's primary key: 32 hex digits in time order
new_id = time_ordered_hex


def period_label(per: str, now: float) -> str:
    if per == "total":
        return "total"
    t = time.gmtime(now)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}" if per == "day" \
        else f"{t.tm_year:04d}-{t.tm_mon:02d}"


def period_end(per: str, now: float) -> float | None:
    if per == "total":
        return None
    if per == "day":
        return period_start("day", now) + 86400
    return period_start("month", period_start("month", now) + 32 * 86400)


def budget_exceeded(who: str, budget: BudgetConfig, spent: float) -> GatewayError:
    per = "in total" if budget.per == "total" else f"per {budget.per} (UTC)"
    return GatewayError(
        429, f"Budget exceeded for {who}: ${spent:.4f} of ${budget.usd:g} {per} is spent or "
             "held by requests in flight, and this request could cost more than what is left.",
        "insufficient_quota", code="budget_exceeded", headers={"x-should-retry": "false"})


class Budget:
    """Policy (reserve / settle / ledger) + dispatcher gate and observer (provider budgets)."""

    skip_reason = "budget"  # what an explanation says of a target this gate held back

    def __init__(self, config: GatewayConfig, ledger: LedgerStore | None = None,
                 store: BudgetStore | None = None, now: Clock = wall_clock,
                 alert: Alert | None = None,
                 more_keys: Callable[[], Iterable[KeyConfig]] | None = None) -> None:
        """`more_keys`: the client keys beside the config's (made through the admin API)."""
        self.config = config
        self.more_keys = more_keys or (lambda: ())
        self.budgets = config.budgets
        self.ledger = ledger
        self.store = store or MemoryBudgetStore()
        self.remote = getattr(self.store, "remote", False)  # Redis: the check awaits
        self.now = now
        self.alert = alert
        self.alerted: set[tuple[str, float]] = set()
        self.alerts: list[dict] = []  # every alert raised, newest last (for /admin and tests)
        self.closing = False  # a clean shutdown has begun: cancels are not the client's
        self._tasks: set[asyncio.Task] = set()
        self._chains: dict[str, tuple[TargetConfig, ...]] = {}
        # Per UTC day (period labels only change at midnight): each key's scopes, and
        # each scope's budget. Cleared when the day changes.
        self._day = -1
        self._scope_cache: dict[str | None, tuple] = {}
        self._budget_cache: dict[str, BudgetConfig | None] = {}

    # --- scopes --------------------------------------------------------------------

    def _cached_scopes(self, ex: Exchange, now: float) -> tuple[list, bool, list, list]:
        """`_scopes`, computed once per key and UTC day; whether any of them can give
        a routing hint (only then are their fractions needed); their (scope, usd)
        pairs and scope names. Shared between requests: never mutated."""
        day = int(now // 86400)
        if day != self._day:
            self._day = day
            self._scope_cache = {}
            self._budget_cache = {}
        key = ex.key
        name = key.name if key is not None else None
        hit = self._scope_cache.get(name)
        if hit is not None and hit[0] is key:
            return hit[1:]
        scopes = self._scopes(ex, now)
        hints = any(b.local_only_at is not None or b.degrade_at is not None
                    for _, b, _ in scopes)
        pairs = [(s, b.usd) for s, b, _ in scopes]
        names = [s for s, _, _ in scopes]
        self._scope_cache[name] = (key, scopes, hints, pairs, names)
        return scopes, hints, pairs, names

    def _scopes(self, ex: Exchange, now: float) -> list[tuple[str, BudgetConfig, str]]:
        scopes = []
        key = ex.key
        if key is not None and key.budget is not None:
            scopes.append((f"key:{key.name}:{period_label(key.budget.per, now)}", key.budget,
                           f"key '{key.name}'"))
        g = self.budgets.global_
        if g is not None:
            scopes.append((f"global:{period_label(g.per, now)}", g, "the gateway"))
        return scopes

    def _fraction(self, scope: str, budget: BudgetConfig) -> float:
        spent, _ = self.store.used(scope)
        return spent / budget.usd if budget.usd > 0 else (1.0 if spent > 0 else 0.0)

    def _hint(self, scopes: list[tuple[str, BudgetConfig, str]]) -> str | None:
        hint = None
        for scope, budget, _ in scopes:
            frac = self._fraction(scope, budget)
            if budget.local_only_at is not None and frac >= budget.local_only_at:
                return "free_only"
            if budget.degrade_at is not None and frac >= budget.degrade_at:
                hint = "cheaper"
        return hint

    # --- the policy ----------------------------------------------------------------

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        now = self.now()
        scopes, hints, pairs, names = self._cached_scopes(ex, now)  # shared: never mutated
        if hints:  # fractions matter only to a budget with degrade_at / local_only_at
            hint = self._hint(scopes)
            if _HINT_RANK[hint] > _HINT_RANK.get(ex.routing_hint, 0):
                ex.routing_hint = hint
        targets = self._reachable(ex)
        if ex.routing_hint == "free_only":
            targets = tuple(t for t in targets if is_free(t)) or targets
        reserved = max_cost(ex.estimated(), targets)
        rid = new_id()  # the reservation's id: its settlement counts once
        if scopes:
            blocked = (await self.store.reserve_async(pairs, reserved, rid)) if self.remote \
                else self.store.reserve(pairs, reserved)
            if blocked is not None:
                _, budget, who = next(x for x in scopes if x[0] == blocked)
                spent, held = self.store.used(blocked)
                raise budget_exceeded(who, budget, spent + held)
        row = Pending(id=rid, request_id=ex.request_id, key_name=ex.key_name,
                      model=ex.model.name, reserved=reserved, stream=ex.stream, created_at=now)
        began = False
        try:
            if self.ledger is not None:
                await self._begin(row, now)
                began = True
            await call_next(ex)
        except GatewayError as err:
            better = self.as_budget_error(ex, err)
            ex.failed(better)
            if better is err:
                raise
            raise better from None
        except BaseException as exc:
            ex.failed(exc)
            raise
        finally:
            self._settle(ex, names, row, began)

    async def _begin(self, row: Pending, now: float) -> None:
        try:
            await self.ledger.begin(row)
        except LedgerUnavailable:
            # The insert may still have landed (a commit whose answer was lost): settle
            # it at nothing, so it is never billed at its reservation later.
            self.ledger.finish(row.id, Outcome(None, None, 503, "ledger_unavailable", 0, 0, 0,
                                               0.0, False, 0.0, False, now))
            writer = getattr(self.ledger, "writer", None)
            raise ledger_unavailable(getattr(writer, "_delay", 1.0)) from None

    def _reachable(self, ex: Exchange) -> tuple[TargetConfig, ...]:
        chain = self._chains.get(ex.model.name)
        if chain is None:
            chain = self._chains[ex.model.name] = reachable(ex.model, self.config.models)
        return chain + asked_fallbacks(ex.body, self.config.models)

    def _settle(self, ex: Exchange, scopes: list[str], row: Pending, began: bool) -> None:
        """Synchronous on purpose: runs to the end even while the task is being cancelled."""
        cache_hit = ex.cache_hit
        # priced once per attempt by the dispatcher, every attempt that consumed tokens
        actual = 0.0 if cache_hit or ex.cost is None else ex.cost
        ex.cost = actual
        if actual > row.reserved + 1e-9 and scopes:
            log.warning(f"budget: request {ex.request_id} cost ${actual:.6f}, more than the "
                        f"${row.reserved:.6f} reserved; recorded in full", extra={"fields": {
                            "request_id": ex.request_id, "key_name": ex.key_name,
                            "cost_usd": actual, "reserved_usd": row.reserved}})
        self.store.settle(scopes, row.reserved, actual, rid=row.id)
        hold, ex.provider_hold = ex.provider_hold, None
        if hold is not None:
            last = ex.attempts[-1] if ex.attempts else None
            spent = (last.cost or 0.0) if last is not None and hold.target is last.target \
                else 0.0
            self.store.settle([hold.scope], hold.amount, spent, rid=hold.hold_id)
            scopes = scopes + [hold.scope]
        self._check_thresholds(scopes)
        if began:
            self._write_rows(ex, row, cache_hit)

    def _write_rows(self, ex: Exchange, row: Pending, cache_hit: bool) -> None:
        outcome, earlier = request_rows(ex, row, cache_hit, self.now(), self.closing)
        for attempt_row in earlier:
            self._watch(self.ledger.add(attempt_row))
        # Queued now, retried until committed even if this task is cancelled; a crash
        # before the commit leaves the row pending, settled at its reservation.
        self._watch(self.ledger.finish(row.id, outcome))

    @staticmethod
    def _watch(future: asyncio.Future) -> None:
        if not future.done() or future.cancelled() or future.exception() is not None:
            future.add_done_callback(_log_failure)  # (already committed: nothing to log)

    # --- provider budgets: a dispatcher gate and observer -----------------------------

    def gate(self, ex: Exchange, target: TargetConfig) -> float | None:
        budget = self.budgets.providers.get(target.provider)
        if budget is None:
            return None
        stale, ex.provider_hold = ex.provider_hold, None
        if stale is not None:  # an earlier target's hold that no attempt used
            self.store.settle([stale.scope], stale.amount, 0.0, rid=stale.hold_id)
        now = self.now()
        scope = f"provider:{target.provider}:{period_label(budget.per, now)}"
        amount = max_cost(ex.estimated(), [target])
        hid = new_id()
        if self.store.reserve([(scope, budget.usd)], amount, rid=hid) is not None:
            ex.budget_blocked = BudgetBlock(target.provider, budget, scope)
            end = period_end(budget.per, now)
            return 3600.0 if end is None else max(1.0, end - now)
        ex.provider_hold = ProviderHold(scope, amount, target, hid)
        return None

    def observe(self, ex: Exchange, attempt: Attempt) -> None:
        """A failed attempt settles its provider hold at once, at what it consumed."""
        hold = ex.provider_hold
        if hold is None or hold.target is not attempt.target:
            return
        if attempt.error_class is not None and ex.target is not attempt.target:
            ex.provider_hold = None
            self.store.settle([hold.scope], hold.amount, attempt.cost or 0.0,
                              rid=hold.hold_id)

    def as_budget_error(self, ex: Exchange, err: GatewayError) -> GatewayError:
        """Every target was skipped and a provider budget was why: say so."""
        blocked = ex.budget_blocked
        if blocked is None or err.code != "upstream_rate_limit" or isinstance(err, UpstreamError):
            return err
        provider, budget, scope = blocked.provider, blocked.budget, blocked.scope
        spent, held = self.store.used(scope)
        return budget_exceeded(f"provider '{provider}'", budget, spent + held)

    # --- thresholds and start-up -------------------------------------------------------

    def forget_cached(self) -> None:
        """Keys changed (through the admin API): scopes and budgets are looked up again."""
        self._scope_cache, self._budget_cache = {}, {}

    def _budget_of(self, scope: str) -> BudgetConfig | None:
        try:
            return self._budget_cache[scope]
        except KeyError:
            budget = self._budget_cache[scope] = self._find_budget(scope)
            return budget

    def _find_budget(self, scope: str) -> BudgetConfig | None:
        kind, _, rest = scope.partition(":")
        if kind == "global":
            return self.budgets.global_
        name = rest.rpartition(":")[0]
        if kind == "provider":
            return self.budgets.providers.get(name)
        key = next((k for k in (*self.config.keys, *self.more_keys()) if k.name == name), None)
        return key.budget if key else None

    def _check_thresholds(self, scopes: list[str]) -> None:
        used = self.store.used
        for scope in scopes:
            budget = self._budget_of(scope)
            if budget is None:
                continue
            spent = used(scope)[0]  # `_fraction`, inlined: this runs on every request
            frac = spent / budget.usd if budget.usd > 0 else (1.0 if spent > 0 else 0.0)
            for threshold in budget.thresholds:
                if frac >= threshold and (scope, threshold) not in self.alerted:
                    self.alerted.add((scope, threshold))
                    self._raise_alert(scope, budget, threshold, frac)

    def _raise_alert(self, scope: str, budget: BudgetConfig, threshold: float,
                     frac: float) -> None:
        event = {"event": "budget_threshold", "scope": scope, "threshold": threshold,
                 "spent_usd": round(frac * budget.usd, 6), "budget_usd": budget.usd,
                 "per": budget.per}
        self.alerts.append(event)
        log.warning(f"budget {scope} passed {threshold:.0%}", extra={"fields": event})
        if self.alert is not None:
            task = asyncio.get_running_loop().create_task(self.alert(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def start(self) -> int:
        """Open the ledger: settle crash leftovers, rebuild this period's spend."""
        if self.ledger is None:
            return 0
        now = self.now()
        try:
            settled = await self.ledger.open(now)
        except Exception as exc:  # noqa: BLE001 — any reason stops start-up, in one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StartupError(f"cannot open the spend ledger {self.ledger.where}: "
                               f"{reason}") from None
        if settled:
            log.warning(f"ledger: {settled} request(s) left pending (by a crash, or by a "
                        "shutdown while the ledger could not write) were settled at their "
                        "reservation and marked 'recovered'")
        if self.remote:
            try:
                await self.reseed()
            except Exception as exc:  # noqa: BLE001 — Redis down: reseeded when it returns empty
                log.error(f"budgets not rebuilt from the ledger yet: {exc!r}")
        else:
            self.rebuild(await self.ledger.spend_by_day(), now)
        return settled

    async def reseed(self) -> None:
        """Shared budgets (Redis) from the shared ledger: set-if-absent per scope, never
        added, so instances rebuilding together count the spend once."""
        if self.ledger is None:
            return
        totals: dict[str, float] = {}
        self.rebuild(await self.ledger.spend_by_day(), self.now(), totals)
        await self.store.seed(totals)

    def rebuild(self, rows: list[SpendRow], now: float,
                totals: dict[str, float] | None = None) -> None:
        """Load this period's spend into the store, or only sum it into `totals`."""
        keys = {k.name: k.budget for k in (*self.config.keys, *self.more_keys())
                if k.budget is not None}
        touched: set[str] = set()
        for row in rows:
            when = row.day * 86400.0
            candidates = []
            if row.key_name in keys:
                b = keys[row.key_name]
                candidates.append((f"key:{row.key_name}", b))
            if self.budgets.global_ is not None:
                candidates.append(("global", self.budgets.global_))
            if row.provider in self.budgets.providers:
                candidates.append((f"provider:{row.provider}", self.budgets.providers[row.provider]))
            for prefix, b in candidates:
                label = period_label(b.per, when)
                if label == period_label(b.per, now):
                    scope = f"{prefix}:{label}"
                    if totals is None:
                        self.store.load(scope, row.cost)
                    else:
                        totals[scope] = totals.get(scope, 0.0) + row.cost
                    touched.add(scope)
        for scope in touched:  # what was already crossed before the restart stays quiet
            budget = self._budget_of(scope)
            frac = self._fraction(scope, budget)
            self.alerted.update((scope, t) for t in budget.thresholds if frac >= t)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ledger is not None:
            await self.ledger.close()


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error(f"ledger: a spend row could not be finalised: {future.exception()}")
