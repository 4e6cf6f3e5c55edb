"""The charts' cells shared through Redis, so every instance draws the same hour.

Each instance adds each 10 s cell it closes into one hash per cell start
(`<prefix>chart:<start>`: hits, n, bad, spend and one field per latency
bucket), which expires after the hour; a page reads the hashes back. Adding
(HINCRBY) rather than setting means instances never overwrite each other.
"""

from __future__ import annotations

from typing import Iterable

from proxy.state.redis_client import RedisState
from proxy.state.series import Cell


class SharedChart:
    def __init__(self, redis: RedisState, cell_s: float, cells: int) -> None:
        self.redis = redis
        self.ttl = int(cell_s * cells + 120)

    def _key(self, start: float) -> str:
        return self.redis.key("chart", str(int(start)))

    async def push(self, cells: Iterable[tuple[float, Cell]]) -> None:
        pipe = self.redis.client.pipeline(transaction=False)
        pushed = False
        for start, cell in cells:
            if cell.empty:
                continue
            key = self._key(start)
            fields = {"hits": cell.hits, "n": cell.n, "bad": cell.bad,
                      **{f"h{i}": c for i, c in cell.lat.items()}}
            for name, value in fields.items():
                if value:
                    pipe.hincrby(key, name, value)
            if cell.spend:
                pipe.hincrbyfloat(key, "spend", cell.spend)
            pipe.expire(key, self.ttl)
            pushed = True
        if pushed:
            await pipe.execute()

    async def pull(self, starts: list[float]) -> dict[float, Cell]:
        pipe = self.redis.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self._key(start))
        found: dict[float, Cell] = {}
        for start, raw in zip(starts, await pipe.execute()):
            if raw:
                found[start] = _cell(raw)
        return found


def _cell(raw: dict) -> Cell:
    cell = Cell()
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        if name == "spend":
            cell.spend = float(value)
        elif name in ("hits", "n", "bad"):
            setattr(cell, name, int(value))
        elif name.startswith("h") and name[1:].isdigit():
            cell.lat[int(name[1:])] = int(value)
    return cell
