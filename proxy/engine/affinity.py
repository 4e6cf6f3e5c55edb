"""Session affinity: consistent hashing with bounded loads.

A session (the request's `user`, a header such as `x-session-id`, or the
client key) hashes to a point on a ring where each target owns points in
proportion to its weight; the session goes to the first target clockwise from
its point. So it sticks to one target (an upstream's prompt cache keeps
working), and when a target leaves only the sessions it owned move: to the
next target on the ring, and back once it returns.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2018): a target takes at most
`load_factor` (c) × its fair share of the requests in flight, counted on this
instance: ⌈c × (in flight + 1) × weight ÷ total weight⌉. A session whose
target is full goes on clockwise to the first with room, only for as long as
it is full. Targets that are open, failing their health check or cooling down
count for neither the load nor the shares, and go last.

The ring is built once per model; a pick is one hash of the session key, one
binary search, and a walk over the model's targets in a precomputed order.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Sequence

from proxy.config.routing import AffinityConfig

if TYPE_CHECKING:
    from proxy.config.types import TargetConfig
    from proxy.core.exchange import Exchange

#: points per target of average weight: the spread of a target's share of sessions
#: around its fair share shrinks as 1/sqrt(points); 160 keeps it within a few percent
POINTS = 160
#: a session key longer than this is hashed by its first KEY_CHARS characters and its
#: length: equally sticky, and a megabyte `user` costs no more than a short one
KEY_CHARS = 1024
_MASK = (1 << 64) - 1


def point(value: str) -> int:
    """A stable 64-bit point for a string: the same in every instance and process."""
    if len(value) > KEY_CHARS:
        value = f"{value[:KEY_CHARS]}\x00{len(value)}"
    return int.from_bytes(blake2b(value.encode("utf-8", "surrogatepass"),
                                  digest_size=8).digest(), "big")


#: how many targets of a walk follow the ring; any further ones follow in config order
#: (they are only tried after this many have failed or been passed over)
WALK = 8


class Ring:
    """Points owned by a model's targets, and for each point the first `WALK` targets a
    walk clockwise from it meets (targets of weight 0 own no point)."""

    __slots__ = ("points", "walks")

    def __init__(self, targets: Sequence["TargetConfig"]) -> None:
        weighted = [i for i, t in enumerate(targets) if t.weight > 0]
        total = sum(targets[i].weight for i in weighted)
        owned: list[tuple[int, int]] = []
        seen: dict[str, int] = {}
        for i in weighted:
            target = targets[i]
            n = seen[target.label] = seen.get(target.label, 0) + 1  # the same label twice
            count = max(1, round(POINTS * len(weighted) * target.weight / total))
            owned += [(point(f"{target.label}#{n}#{v}"), i) for v in range(count)]
        owned.sort()
        self.points = [p for p, _ in owned]
        self.walks = _walks([i for _, i in owned], min(WALK, len(weighted)))


def _walks(owners: list[int], length: int) -> list[tuple[int, ...]]:
    """For each point, the first `length` distinct owners clockwise from it."""
    n = len(owners)
    interned: dict[tuple, tuple] = {}
    walks = []
    for p in range(n):
        found: list[int] = []
        j = p
        while len(found) < length:
            owner = owners[j]
            if owner not in found:
                found.append(owner)
            j = j + 1 if j + 1 < n else 0
        walk = tuple(found)
        walks.append(interned.setdefault(walk, walk))
    return walks


def session_key(ex: "Exchange", config: AffinityConfig) -> str | None:
    """The session's key, or None when the request carries none."""
    if config.source == "user":
        user = ex.body.get("user")
        return user if isinstance(user, str) and user else None
    if config.source == "key":
        return ex.key.name if ex.key is not None else None
    if ex.http is None:
        return None
    value = ex.http.headers.get(config.header)
    return value or None


#: session keys up to this long have their points remembered (at most POINT_CACHE of
#: them, forgotten all at once when full): a returning session costs one dict lookup
CACHED_KEY_CHARS = 256
POINT_CACHE = 8192


class Affinity:
    """Orders a model's capable targets for a session; one ring per model, built once."""

    def __init__(self, models: Any, view: Any) -> None:
        """`view`: the router's View (stats, health, rng), read on every pick."""
        self.view = view
        self.rings: dict[str, Ring] = {}
        self.models = models
        self._points: dict[str, int] = {}

    def ring(self, model: str) -> Ring:
        ring = self.rings.get(model)
        if ring is None:
            ring = self.rings[model] = Ring(self.models[model].targets)
        return ring

    def order(self, model: str, targets: Sequence["TargetConfig"], ex: "Exchange | None",
              config: AffinityConfig, notes: dict | None = None,
              down: "set[int] | None" = None) -> list:
        """The candidates in the session's ring order, the one it goes to first. `down`:
        ids of targets that are open, unhealthy or cooling down; they count for neither
        the loads nor the shares (the dispatcher moves them last)."""
        if not targets:
            return []
        everything = self.models[model].targets
        key = session_key(ex, config) if ex is not None else None
        if key is None:
            at = self.view.rng.getrandbits(64)
        else:
            at = self._points.get(key)
            if at is None:
                at = self._remember(key)
        ring = self.rings.get(model) or self.ring(model)
        points = ring.points
        walk = ring.walks[bisect_left(points, at) % len(points)] if points else ()
        ordered = [everything[i] for i in walk]
        if len(walk) < len(everything):  # weight 0, or beyond WALK: config order
            ordered += [t for i, t in enumerate(everything) if i not in walk]
        if len(targets) < len(everything):
            wanted = {id(t) for t in targets}
            ordered = [t for t in ordered if id(t) in wanted]
        counted = ordered if down is None else [t for t in ordered if id(t) not in down]
        chosen, room = self._bounded(counted, config.load_factor)
        if notes is not None:
            get = self.view.stats.get
            notes.update(session=None if key is None else f"{at:016x}",
                         key_from=config.key_from, load_factor=config.load_factor,
                         loads={t.label: [get(t.label).in_flight, math.ceil(room * t.weight)]
                                for t in counted})
        if chosen is None or chosen is ordered[0]:
            return ordered
        ordered.remove(chosen)
        return [chosen, *ordered]

    def _remember(self, key: str) -> int:
        at = point(key)
        if len(key) <= CACHED_KEY_CHARS:
            if len(self._points) >= POINT_CACHE:
                self._points.clear()
            self._points[key] = at
        return at

    def _bounded(self, targets: Sequence["TargetConfig"],
                 load_factor: float) -> tuple["TargetConfig | None", float]:
        """The first target in ring order below its cap, ⌈c × (in flight + 1) × weight ÷
        total weight⌉, and the room per unit of weight (None: no target has weight)."""
        get = self.view.stats.get
        loads = [get(t.label).in_flight for t in targets]
        weight = 0.0
        for t in targets:
            if t.weight > 0:
                weight += t.weight
        if weight <= 0:
            return None, 0.0
        room = load_factor * (sum(loads) + 1) / weight
        for target, load in zip(targets, loads):
            if target.weight > 0 and load < math.ceil(room * target.weight):
                return target, room
        return None, room
