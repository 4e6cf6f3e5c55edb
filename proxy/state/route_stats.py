"""What token-aware and task-aware routing learn: tokens in flight per target, and
success and latency per task kind and target.

Both are read on every pick, so reads are dict lookups. Tokens in flight are
this instance's exactly plus, with the Redis backend, the other instances' as
last polled (proxy/state/token_load_redis.py); per-task statistics stay per
instance, like the per-target ones they refine.
"""

from __future__ import annotations

from proxy.state.target_stats import ALPHA, TargetStats


class TokenLoad:
    """Estimated tokens (prompt + the output cap) of the attempts in flight, per target."""

    def __init__(self) -> None:
        self.local: dict[str, int] = {}
        self.remote: dict[str, int] = {}  # the other instances' sum, as last polled

    def add(self, label: str, tokens: int) -> None:
        self.local[label] = self.local.get(label, 0) + tokens

    def done(self, label: str, tokens: int) -> None:
        left = self.local.get(label, 0) - tokens
        self.local[label] = left if left > 0 else 0

    def get(self, label: str) -> int:
        return self.local.get(label, 0) + self.remote.get(label, 0)


class TaskStats:
    """Success rate and latency per (task kind, target); task kinds are the config's, so
    the table is bounded."""

    def __init__(self) -> None:
        self._by_task: dict[str, dict[str, TargetStats]] = {}

    def of(self, task: str) -> dict[str, TargetStats]:
        """Per target label; a target missing here has no sample for this task yet."""
        return self._by_task.get(task) or {}

    def learn(self, task: str, label: str, ok: bool | None, latency_ms: float | None) -> None:
        if ok is None and latency_ms is None:
            return
        table = self._by_task.setdefault(task, {})
        stats = table.get(label)
        if stats is None:
            stats = table[label] = TargetStats()
        stats.requests += 1
        if ok is not None:
            stats.success_rate += ALPHA * ((1.0 if ok else 0.0) - stats.success_rate)
            stats.failures += not ok
        if latency_ms is not None:
            old = stats.latency_ms
            stats.latency_ms = latency_ms if old is None else old + ALPHA * (latency_ms - old)
