"""Redis implementations of the state stores, shared by every gatewise instance.

Each call that must decide (take, acquire, reserve, cache get) is one Lua
script run atomically by Redis, timed by Redis's own clock (`TIME`), so N
instances admit what one would. Calls that only report (adjust, release,
settle, cache set, cool-down) are fire-and-forget tasks, so the synchronous
`finally` blocks of the policies stay synchronous. Scripts live in
proxy/state/redis_lua.py.

Outage (Redis unreachable): `RedisState.up` (proxy/state/redis_client.py) goes False
at the first failed call and a monitor task reconnects every `interval` seconds. Meanwhile rate
limits and concurrency fall back to per-instance stores at limit ÷
`state.instances`, the cache misses, cool-downs stay local, and budgets fail
closed (503 + retry-after) or, if configured, open. Settlements that could not
be written are replayed on reconnection; they are idempotent by reservation id.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from collections.abc import Iterable

from redis.exceptions import RedisError

from proxy.core.errors import GatewayError
from proxy.state.cache_store import CachedAnswer
from proxy.state.redis_client import RedisState, pool_busy
from proxy.state.stores import MemoryCounterStore, MemoryRateStore, Window
from proxy.state.target_stats import MemoryStatsStore

log = logging.getLogger("gatewise.state")
__all__ = ["RedisBudgetStore", "RedisCacheStore", "RedisCounterStore", "RedisRateStore",
           "RedisState", "SharedStatsStore", "pool_busy"]
#: a reservation the owner never settled (crashed instance) is freed after this long
HOLD_TTL_S = 900.0
#: a settled reservation id is remembered this long, so a retried reconcile counts
#: once. One key per request: at 1,000 requests/s that is ~0.9 M keys (~90 MB). A
#: settlement replayed after an outage longer than this, whose first try Redis did
#: run although the reply was lost, would count twice: over- never under-counting.
DONE_TTL_S = HOLD_TTL_S
class RedisRateStore:
    """GCRA (a leaky bucket as a theoretical arrival time) per name and minute."""

    remote = True

    def __init__(self, state: RedisState, period: float = 60.0) -> None:
        self.state = state
        self._period_us = int(period * 1_000_000)
        self._local = MemoryRateStore(period)  # the outage fallback, at limit ÷ instances
        self._last: dict[str, Window] = {}

    def _share(self, limit: int) -> int:
        return max(1, limit // self.state.instances)

    def _window(self, name: str, limit: int, reply: list) -> tuple[bool, Window]:
        ok, level_us, retry_us = int(reply[0]), int(reply[1]), int(reply[2])
        interval = self._period_us / limit
        window = Window(limit=limit, remaining=max(0, int(limit - level_us / interval + 1e-9)),
                        reset_s=level_us / 1e6, retry_after_s=retry_us / 1e6)
        self._last[name] = window
        return bool(ok), window

    async def take_async(self, name: str, limit: int, amount: float) -> tuple[bool, Window]:
        if self.state.up:
            try:
                reply = await self.state.run("gcra", [self.state.key("rate", name)],
                                             [self._period_us, limit, amount, "take"])
                return self._window(name, limit, reply)
            except (RedisError, OSError):
                pass
        return self._local.take(name, self._share(limit), amount)

    async def take_pair_async(self, first: tuple[str, int, float],
                              second: tuple[str, int, float]
                              ) -> tuple[bool, Window, Window]:
        """Two buckets (a key's requests and tokens) in one round trip: both taken,
        or neither (no undo call when the second refuses)."""
        (n1, l1, a1), (n2, l2, a2) = first, second
        if self.state.up:
            try:
                r = await self.state.run("gcra_pair", [self.state.key("rate", n1),
                                                       self.state.key("rate", n2)],
                                         [self._period_us, l1, a1, l2, a2])
                ok1, w1 = self._window(n1, l1, r[0:3])
                ok2, w2 = self._window(n2, l2, r[3:6])
                return ok1 and ok2, w1, w2
            except (RedisError, OSError):
                pass
        return self._local.take_pair(first, second, self._share)

    def take(self, name: str, limit: int, amount: float) -> tuple[bool, Window]:
        """Synchronous callers (dispatcher gates) get the per-instance share."""
        return self._local.take(name, self._share(limit), amount)

    def take_pair(self, first: tuple[str, int, float], second: tuple[str, int, float]
                  ) -> tuple[bool, Window, Window]:
        """`take` for two buckets, both or neither (the per-instance shares)."""
        return self._local.take_pair(first, second, self._share)

    def adjust_local(self, name: str, limit: int, delta: float) -> None:
        """Reconcile what a synchronous `take` took: in the same local bucket (sending
        it to Redis, which never saw the take, would skew both)."""
        self._local.adjust(name, self._share(limit), delta)

    def adjust(self, name: str, limit: int, delta: float) -> None:
        if delta == 0:
            return
        if not self.state.up:
            self._local.adjust(name, self._share(limit), delta)
            return

        async def write() -> None:
            reply = await self.state.run("gcra", [self.state.key("rate", name)],
                                         [self._period_us, limit, delta, "adjust"])
            self._window(name, limit, reply)
        self.state.spawn(write)

    def peek(self, name: str, limit: int) -> Window:
        """The window as of this instance's last call (exact reads would need an await)."""
        return self._last.get(name) or Window(limit, limit, 0.0, 0.0)


class RedisCounterStore:
    """In-flight counts per instance (a hash field each); a crashed instance's
    count vanishes when its heartbeat key expires."""

    remote = True

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self._local = MemoryCounterStore()  # the outage fallback
        self._local_held: dict[str, int] = {}
        self._last: dict[str, int] = {}

    async def acquire_async(self, name: str, limit: int) -> bool:
        state = self.state
        if state.up:
            try:
                ok, count = await state.run("acquire", [state.key("cc", name)],
                                            [limit, state.instance_id, state.key("inst", "")])
                self._last[name] = int(count)
                return bool(ok)
            except (RedisError, OSError):
                pass
        if not self._local.acquire(name, max(1, limit // state.instances)):
            return False
        self._local_held[name] = self._local_held.get(name, 0) + 1
        return True

    def acquire(self, name: str, limit: int) -> bool:
        return self._local.acquire(name, max(1, limit // self.state.instances))

    def release(self, name: str) -> None:
        if self._local_held.get(name):
            self._local_held[name] -= 1
            self._local.release(name)
            return
        state = self.state

        async def write() -> None:
            await state.run("release", [state.key("cc", name)], [state.instance_id])
        state.spawn(write, retry=True)

    def current(self, name: str) -> int:
        return self._last.get(name, 0) + self._local.current(name)


def _expire_at(scope: str) -> int:
    """When a scope's keys may go: a day after its UTC period ends (0: never, `total`)."""
    label = scope.rpartition(":")[2]
    try:
        if len(label) == 10 and label[4] == label[7] == "-":  # YYYY-MM-DD (no strptime:
            y, m, d = int(label[:4]), int(label[5:7]), int(label[8:])  # 4 per request)
            if not (1 <= m <= 12 and 1 <= d <= 31):
                return 0
            end = calendar.timegm((y, m, d, 0, 0, 0)) + 86400
        elif len(label) == 7:  # YYYY-MM
            y, m = int(label[:4]), int(label[5:])
            end = calendar.timegm((y + m // 12, m % 12 + 1, 1, 0, 0, 0))
        else:
            return 0
    except ValueError:
        return 0
    return int(end) + 86400


class RedisBudgetStore:
    """Spend and holds per scope: `b:SCOPE` {spent, held}, holds by reservation id
    in `bh:SCOPE` (amount) and `bx:SCOPE` (expiry, so a crashed owner's hold frees)."""

    remote = True

    def __init__(self, state: RedisState, fail_open: bool = False,
                 hold_ttl_s: float = HOLD_TTL_S) -> None:
        self.state = state
        self.fail_open = fail_open
        self.hold_ttl_ms = int(hold_ttl_s * 1000)
        self._used: dict[str, tuple[float, float]] = {}  # as of the last reply

    def _keys(self, scopes: Iterable[str]) -> list[str]:
        k = self.state.key
        return [x for s in scopes for x in (k("b", s), k("bh", s), k("bx", s))]

    def _remember(self, scopes: list[str], flat: list) -> None:
        for i, scope in enumerate(scopes):
            self._used[scope] = (float(flat[2 * i]), float(flat[2 * i + 1]))

    async def reserve_async(self, scopes: Iterable[tuple[str, float]], amount: float,
                            rid: str) -> str | None:
        pairs = list(scopes)
        names = [s for s, _ in pairs]
        if self.state.up:
            try:
                reply = await self.state.run(
                    "reserve", self._keys(names),
                    [amount, rid, self.hold_ttl_ms, *(_expire_at(s) for s in names),
                     *(limit for _, limit in pairs)])
                self._remember(names, reply[1])
                blocked = int(reply[0])
                return names[blocked - 1] if blocked else None
            except (RedisError, OSError):
                pass
        if self.fail_open:
            return None
        raise GatewayError(
            503, "The gateway cannot check budgets right now: its shared state store (Redis) "
                 "is unreachable, and budgets fail closed. Retry shortly.", "server_error",
            code="budget_store_unavailable", headers={"retry-after": "5"})

    def reserve(self, scopes: Iterable[tuple[str, float]], amount: float,
                rid: str = "") -> str | None:
        """For synchronous gates (provider budgets): checked against the shared totals
        as of this instance's last reply, then held in Redis without a second check."""
        pairs = list(scopes)
        for scope, limit in pairs:
            spent, held = self._used.get(scope, (0.0, 0.0))
            if spent + held + amount > limit + 1e-12:
                return scope
            self._used[scope] = (spent, held + amount)
        if not self.state.up and not self.fail_open:
            return pairs[0][0] if pairs else None
        names = [s for s, _ in pairs]
        rid = rid or uuid.uuid4().hex

        async def write() -> None:
            reply = await self.state.run(
                "reserve", self._keys(names),
                [amount, rid, self.hold_ttl_ms, *(_expire_at(s) for s in names),
                 *(1e300 for _ in names)])
            self._remember(names, reply[1])
        self.state.spawn(write)
        return None

    def settle(self, scopes: Iterable[str], reserved: float, actual: float,
               rid: str = "") -> None:
        """Idempotent by `rid`: a retried (or replayed) settlement counts once."""
        names = list(scopes)
        rid = rid or uuid.uuid4().hex
        for scope in names:  # keep the local view roughly current until the reply
            spent, held = self._used.get(scope, (0.0, 0.0))
            self._used[scope] = (spent + actual, max(0.0, held - reserved))

        async def write() -> None:
            await self.settle_async(names, actual, rid)
        self.state.spawn(write, retry=True)

    async def settle_async(self, scopes: list[str], actual: float, rid: str) -> bool:
        """True if this call counted, False if `rid` was already settled."""
        reply = await self.state.run(
            "settle", [self.state.key("done", rid), *self._keys(scopes)],
            [rid, actual, int(DONE_TTL_S * 1000), *(_expire_at(s) for s in scopes)])
        self._remember(scopes, reply[1])
        return bool(int(reply[0]))

    def used(self, scope: str) -> tuple[float, float]:
        return self._used.get(scope, (0.0, 0.0))

    def load(self, scope: str, spent: float) -> None:
        raise NotImplementedError("shared budgets are seeded with seed(), never added to")

    async def seed(self, totals: dict[str, float]) -> None:
        """Rebuild from the ledger, idempotently: a scope not yet seeded gets
        max(its current spend, the ledger's total) — never ledger + current, so N
        instances rebuilding at once cannot count the spend N times."""
        for scope, total in totals.items():
            reply = await self.state.run("seed", [self.state.key("b", scope)],
                                         [total, _expire_at(scope)])
            self._used[scope] = (float(reply[0]), float(reply[1]))

    async def refresh(self, scopes: Iterable[str]) -> None:
        """Read the shared totals (the monitor does this so provider gates see others)."""
        names = list(scopes)
        if names:
            reply = await self.state.run("used", self._keys(names), [])
            self._remember(names, reply)


class RedisCacheStore:
    """The response cache: one string per entry, `target\\nbody`, with a TTL."""

    remote = True

    def __init__(self, state: RedisState, ttl: float) -> None:
        self.state = state
        self.ttl_ms = max(1, int(ttl * 1000))

    async def get_async(self, key: str) -> CachedAnswer | None:
        if not self.state.up:
            return None
        try:
            raw = await self.state.client.get(self.state.key("cache", key))
        except (RedisError, OSError) as exc:
            self.state.failed(exc)
            return None
        if raw is None:
            return None
        target, _, body = raw.partition(b"\n")
        return CachedAnswer(body, target.decode() or None)

    def get(self, key: str) -> CachedAnswer | None:
        return None  # only the async path reads Redis

    def set(self, key: str, entry: CachedAnswer) -> None:
        value = (entry.target or "").encode() + b"\n" + entry.body

        async def write() -> None:
            await self.state.client.set(self.state.key("cache", key), value, px=self.ttl_ms)
        self.state.spawn(write)


class SharedStatsStore(MemoryStatsStore):
    """Target stats stay local; cool-downs are also written to Redis (with a TTL on
    Redis's clock) and polled from it, so one instance's 429 protects the others."""

    def __init__(self, state: RedisState, labels: Iterable[str]) -> None:
        super().__init__()
        self.state = state
        self.labels = sorted(set(labels))

    def cool_down(self, label: str, seconds: float, share: bool = True) -> None:
        super().cool_down(label, seconds)
        if share and seconds > 0:
            state = self.state

            async def write() -> None:
                await state.run("cool", [state.key("cool", label)], [int(seconds * 1000)])
            state.spawn(write)

    async def poll(self) -> None:
        if not self.labels:
            return
        state = self.state
        pipe = state.client.pipeline(transaction=False)
        for label in self.labels:
            pipe.pttl(state.key("cool", label))
        for label, ms in zip(self.labels, await pipe.execute()):
            if ms > 0 and self.cooling(label) * 1000 < ms - 50:
                super().cool_down(label, ms / 1000)
