"""Tokens in flight shared between instances through Redis (`state.backend: redis`).

Each instance counts its own attempts exactly (no Redis call on the request
path) and, on every tick of the Redis monitor (`RedisState.interval`, 0.5 s by
default), publishes its non-zero counts and reads every other live instance's
in one script (proxy/state/redis_lua.py `TOKENS`). So `least_tokens` sees the
other instances' load at most one tick old. An instance that stops publishing
is forgotten after `ttl`; while Redis is unreachable only local counts are used.
"""

from __future__ import annotations

from proxy.state.redis_client import RedisState
from proxy.state.route_stats import TokenLoad


class RedisTokenLoad(TokenLoad):
    def __init__(self, state: RedisState) -> None:
        super().__init__()
        self.state = state
        self.ttl_ms = max(1500, int(state.interval * 3000))

    def get(self, label: str) -> int:
        mine = self.local.get(label, 0)
        return mine + self.remote.get(label, 0) if self.state.up else mine

    async def publish(self) -> None:
        """One tick: write this instance's counts, take the others' sums."""
        state = self.state
        flat: list[object] = []
        for label, tokens in self.local.items():
            if tokens > 0:
                flat += (label, tokens)
        reply = await state.run("tokens", [state.key("tokens")],
                                [state.instance_id, self.ttl_ms, *flat])
        remote: dict[str, int] = {}
        for i in range(0, len(reply), 2):
            label = reply[i].decode() if isinstance(reply[i], bytes) else reply[i]
            remote[label] = remote.get(label, 0) + int(reply[i + 1])
        self.remote = remote
