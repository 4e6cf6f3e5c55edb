"""Per-target live statistics: in flight, success rate, latency, last error, cool-down.

Routing strategies read them on every pick, so reads are plain attribute
lookups. They sit behind `StatsStore` so a Redis-backed store can share them
between instances later; the memory store is the default.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

#: weight of the newest sample in the moving averages
ALPHA = 0.2


@dataclass(slots=True)
class TargetStats:
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    success_rate: float = 1.0  # EWMA of 1 (success) / 0 (failure of the target)
    latency_ms: float | None = None  # EWMA of time to first token (stream) or to the answer
    last_error_class: str | None = None
    cooldown_until: float = 0.0  # monotonic seconds: rate-limited/overloaded until then

    def snapshot(self) -> dict:
        return {"in_flight": self.in_flight, "requests": self.requests,
                "failures": self.failures, "success_rate": round(self.success_rate, 4),
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
                "last_error_class": self.last_error_class}


class StatsStore(Protocol):
    def get(self, label: str) -> TargetStats: ...
    def started(self, label: str) -> None: ...
    def finished(self, label: str, *, ok: bool | None, latency_ms: float | None,
                 error_class: str | None) -> None: ...
    def cool_down(self, label: str, seconds: float) -> None: ...
    def all(self) -> dict[str, TargetStats]: ...


class MemoryStatsStore:
    """In-process stats keyed by target label (provider/model)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._stats: dict[str, TargetStats] = {}
        self._clock = clock

    def get(self, label: str) -> TargetStats:
        stats = self._stats.get(label)
        if stats is None:
            stats = self._stats[label] = TargetStats()
        return stats

    def started(self, label: str) -> None:
        stats = self.get(label)
        stats.in_flight += 1
        stats.requests += 1

    def finished(self, label: str, *, ok: bool | None, latency_ms: float | None,
                 error_class: str | None) -> None:
        """ok: True success, False a failure of the target, None neither (4xx, cancel)."""
        stats = self.get(label)
        stats.in_flight = max(0, stats.in_flight - 1)
        if ok is not None:
            stats.success_rate += ALPHA * ((1.0 if ok else 0.0) - stats.success_rate)
        if ok is False:
            stats.failures += 1
        if latency_ms is not None:
            old = stats.latency_ms
            stats.latency_ms = latency_ms if old is None else old + ALPHA * (latency_ms - old)
        if error_class is not None:
            stats.last_error_class = error_class

    def cool_down(self, label: str, seconds: float) -> None:
        stats = self.get(label)
        stats.cooldown_until = max(stats.cooldown_until, self._clock() + seconds)

    def cooling(self, label: str) -> float:
        """Seconds until a cooling target may be tried again (0 when it may now)."""
        stats = self._stats.get(label)
        if stats is None or not stats.cooldown_until:  # never cooled: no clock read
            return 0.0
        return max(0.0, stats.cooldown_until - self._clock())

    def all(self) -> dict[str, TargetStats]:
        return dict(self._stats)

    def keep_only(self, labels: Iterable[str]) -> "MemoryStatsStore":
        """A store for the next config (a reload): the same live entries for `labels`
        (requests in flight on either side count in one place), none for the rest."""
        keep = set(labels)
        carried = copy.copy(self)  # the same kind of store, with what it holds
        carried._stats = {label: s for label, s in self._stats.items() if label in keep}
        return carried
