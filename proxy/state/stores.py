"""Small state-store interfaces and their in-process implementations.

Each interface is a handful of methods whose every call is atomic, so a Redis
implementation (one Lua script per call) can replace the memory one without
the policies changing. The memory versions are synchronous on purpose: on one
event loop a call that never awaits cannot interleave with another, which is
what makes check-and-take atomic here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol


class Window(NamedTuple):
    """A rate window's state after a take: what OpenAI's x-ratelimit headers report.
    A named tuple: made on every take, and a tuple costs a fraction of a frozen
    dataclass to build."""

    limit: int
    remaining: int
    reset_s: float  # until the window is back to its initial (empty) state
    retry_after_s: float  # until the refused amount would fit (0 when taken)


class RateStore(Protocol):
    def take(self, name: str, limit: int, amount: float) -> tuple[bool, Window]:
        """Take `amount` of `name`'s per-minute `limit` if it fits now; never waits."""

    def adjust(self, name: str, limit: int, delta: float) -> None:
        """Reconcile an estimate with what was really used (either sign)."""

    def adjust_local(self, name: str, limit: int, delta: float) -> None:
        """`adjust` for what a synchronous `take` took (the same bucket as that take)."""

    def take_pair(self, first: tuple[str, int, float], second: tuple[str, int, float]
                  ) -> tuple[bool, Window, Window]:
        """`take` of (name, limit, amount) twice: both taken, or neither (a refused
        first leaves the second untouched and reports its window)."""

    def peek(self, name: str, limit: int) -> Window: ...


class _Bucket:
    """A leaky bucket: the level drips out at `max_rate / period` per second of
    loop time. Callers never wait, so the bookkeeping is a few float operations;
    unlike a waiting limiter (aiolimiter) it can give back what an estimate took
    (`adjust`) and report its window for the `x-ratelimit-*` headers (`peek`),
    with the same arithmetic as the Redis script."""

    __slots__ = ("_last_check", "_level", "_rate_per_sec", "max_rate")

    def __init__(self, max_rate: float, period: float) -> None:
        self.max_rate = max_rate
        self._rate_per_sec = max_rate / period
        self._level = 0.0
        self._last_check = 0.0

    def leak(self, now: float) -> float:
        level = self._level
        if level:
            level = self._level = max(level - (now - self._last_check) * self._rate_per_sec, 0)
        self._last_check = now
        return level


class MemoryRateStore:
    """Leaky buckets, one per name, on the running loop's clock; never waits: a
    caller over its limit is answered at once, not queued."""

    def __init__(self, period: float = 60.0) -> None:
        self._period = period
        self._buckets: dict[str, _Bucket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _now(self) -> float:
        loop = self._loop
        if loop is None or loop.is_closed():  # the loop in use, kept
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _bucket(self, name: str, limit: int) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.max_rate != limit:
            bucket = self._buckets[name] = _Bucket(limit, self._period)
        return bucket

    def take(self, name: str, limit: int, amount: float,
             now: float | None = None) -> tuple[bool, Window]:
        """`now`: the loop's time, when the caller has just read it (`take_pair`)."""
        bucket = self._buckets.get(name)
        if bucket is None or bucket.max_rate != limit:
            bucket = self._bucket(name, limit)
        if amount <= limit:
            if now is None:  # `_now()` and `bucket.leak()`, inlined: the hot path
                loop = self._loop
                if loop is None or loop.is_closed():
                    loop = self._loop = asyncio.get_running_loop()
                now = loop.time()
            level = bucket._level
            if level:
                level = bucket._level = max(
                    level - (now - bucket._last_check) * bucket._rate_per_sec, 0)
            bucket._last_check = now
            ok = level + amount <= limit
        else:  # can never fit: refused without touching the bucket
            level, ok = bucket._level, False
        per_sec = bucket._rate_per_sec
        if ok:
            level = bucket._level = level + amount
            return ok, Window(limit, max(0, int(limit - level)), level / per_sec, 0.0)
        retry = max(0.0, level + amount - limit) / per_sec if amount else 0.0
        return ok, Window(limit, max(0, int(limit - level)), level / per_sec, retry)

    def adjust(self, name: str, limit: int, delta: float) -> None:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.max_rate != limit:
            bucket = self._bucket(name, limit)
        now = self._now()
        level = bucket._level  # `bucket.leak(now)`, inlined
        if level:
            level = max(level - (now - bucket._last_check) * bucket._rate_per_sec, 0)
        bucket._last_check = now
        bucket._level = max(0.0, level + delta)

    adjust_local = adjust  # in memory there is only one bucket

    def take_pair(self, first: tuple[str, int, float], second: tuple[str, int, float],
                  share: Callable[[int], int] | None = None
                  ) -> tuple[bool, Window, Window]:
        """Both or neither, like the Redis store's one-round-trip pair, at one reading
        of the clock. `share`: what each limit is on this instance (Redis's fallback)."""
        (n1, l1, a1), (n2, l2, a2) = first, second
        if share is not None:
            l1, l2 = share(l1), share(l2)
        b1 = self._buckets.get(n1)
        if b1 is None or b1.max_rate != l1:
            b1 = self._bucket(n1, l1)
        b2 = self._buckets.get(n2)
        if b2 is None or b2.max_rate != l2:
            b2 = self._bucket(n2, l2)
        now = self._now()
        if a1 <= l1 and a2 <= l2:
            # Both buckets leaked to now (as `take` does), then both taken if both fit:
            # the same floats as two `take`s, in one step.
            level1 = b1._level
            if level1:
                level1 = b1._level = max(level1 - (now - b1._last_check) * b1._rate_per_sec, 0)
            b1._last_check = now
            level2 = b2._level
            if level2:
                level2 = b2._level = max(level2 - (now - b2._last_check) * b2._rate_per_sec, 0)
            b2._last_check = now
            if level1 + a1 <= l1 and level2 + a2 <= l2:
                level1 = b1._level = level1 + a1
                level2 = b2._level = level2 + a2
                return (True,
                        Window(l1, max(0, int(l1 - level1)), level1 / b1._rate_per_sec, 0.0),
                        Window(l2, max(0, int(l2 - level2)), level2 / b2._rate_per_sec, 0.0))
        # One is refused: the two steps (at the same time: nothing leaks again).
        ok1, w1 = self.take(n1, l1, a1, now)
        if not ok1:
            return False, w1, self.peek(n2, l2)
        ok2, w2 = self.take(n2, l2, a2, now)
        if not ok2:
            self.adjust(n1, l1, -a1)
        return ok2, w1, w2

    def peek(self, name: str, limit: int) -> Window:
        bucket = self._bucket(name, limit)
        bucket.leak(self._now())
        return self._window(bucket, limit, 0.0)

    def _window(self, bucket: _Bucket, limit: int, refused: float) -> Window:
        level = bucket._level
        per_sec = limit / self._period
        retry = max(0.0, level + refused - limit) / per_sec if refused else 0.0
        return Window(limit=limit, remaining=max(0, int(limit - level)),
                      reset_s=level / per_sec, retry_after_s=retry)


class CounterStore(Protocol):
    def acquire(self, name: str, limit: int) -> bool:
        """Add one in-flight request to `name` if fewer than `limit` are running."""

    def release(self, name: str) -> None: ...

    def current(self, name: str) -> int: ...


class MemoryCounterStore:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, name: str, limit: int) -> bool:
        count = self._counts.get(name, 0)
        if count >= limit:
            return False
        self._counts[name] = count + 1
        return True

    def release(self, name: str) -> None:
        count = self._counts.get(name, 0)
        self._counts[name] = max(0, count - 1)

    def current(self, name: str) -> int:
        return self._counts.get(name, 0)


class BudgetStore(Protocol):
    """Spend per scope (e.g. `key:web-app:day:2026-11-28`), in USD."""

    def reserve(self, scopes: Iterable[tuple[str, float]], amount: float,
                rid: str = "") -> str | None:
        """Hold `amount` in every (scope, limit) if it fits all of them; else the
        first scope that has no room, and nothing is held anywhere."""

    def settle(self, scopes: Iterable[str], reserved: float, actual: float,
               rid: str = "") -> None:
        """Replace a hold by the real cost (0 releases it); `rid` names the reservation,
        so a shared store can make a retried settlement count once."""

    def used(self, scope: str) -> tuple[float, float]:
        """(settled spend, outstanding holds)."""

    def load(self, scope: str, spent: float) -> None:
        """Add spend recovered from the ledger at start-up."""


class MemoryBudgetStore:
    def __init__(self) -> None:
        self._spent: dict[str, float] = {}
        self._held: dict[str, float] = {}

    def reserve(self, scopes: Iterable[tuple[str, float]], amount: float,
                rid: str = "") -> str | None:
        if not isinstance(scopes, (list, tuple)):  # (the budget passes a list, read twice)
            scopes = list(scopes)
        for scope, limit in scopes:
            if self._spent.get(scope, 0.0) + self._held.get(scope, 0.0) + amount > limit + 1e-12:
                return scope
        for scope, _ in scopes:
            self._held[scope] = self._held.get(scope, 0.0) + amount
        return None

    def settle(self, scopes: Iterable[str], reserved: float, actual: float,
               rid: str = "") -> None:
        for scope in scopes:
            held = self._held.get(scope, 0.0) - reserved
            if held <= 1e-12:
                self._held.pop(scope, None)
            else:
                self._held[scope] = held
            self._spent[scope] = self._spent.get(scope, 0.0) + actual

    def used(self, scope: str) -> tuple[float, float]:
        return self._spent.get(scope, 0.0), self._held.get(scope, 0.0)

    def load(self, scope: str, spent: float) -> None:
        self._spent[scope] = self._spent.get(scope, 0.0) + spent

    async def seed(self, totals: dict[str, float]) -> None:
        """The ledger's totals for scopes a reload adds: never added to what is already
        counted, only raised to it (as the shared store's seed)."""
        for scope, total in totals.items():
            self._spent[scope] = max(self._spent.get(scope, 0.0), total)


Clock = Callable[[], float]  # seconds since the epoch (UTC); tests inject their own
wall_clock: Clock = time.time
