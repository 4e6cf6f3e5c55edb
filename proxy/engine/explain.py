"""Why a request went where it did, for the admin key's `x-gatewise-explain: 1`.

Collected only when asked for (the routes policy creates it), so other requests
pay one `is None` test per hook. The dispatcher reports each model it ordered
(its candidates in order, with the numbers its strategy ranked them by) and
each target it skipped or moved last, with the reason; `header()` renders it
as compact ASCII JSON for the `x-gatewise-explain` response header.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from proxy.engine.routing import Scale, View, adaptive_parts, adaptive_score, price

if TYPE_CHECKING:
    from proxy.config.routing import AdaptiveWeights
    from proxy.config.types import TargetConfig
    from proxy.core.exchange import Exchange

#: the header stays well under common 8 KB header-line limits; longer lists are cut
MAX_HEADER = 6000


def gate_reason(gate: Any) -> str:
    """A gate's owner names its reason (`skip_reason`); a bare function is a rate limit."""
    return getattr(getattr(gate, "__self__", gate), "skip_reason", "rate_limit")


class Explanation:
    __slots__ = ("models", "skipped")

    def __init__(self) -> None:
        self.models: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []

    def skip(self, label: str, reason: str, detail: Any = None) -> None:
        entry: dict[str, Any] = {"target": label, "reason": reason}
        if detail is not None:
            entry["detail"] = detail
        self.skipped.append(entry)

    def ordered(self, model: str, strategy: str, candidates: list[dict[str, Any]],
                extra: dict[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"model": model, "strategy": strategy}
        if extra:
            entry.update(extra)
        entry["candidates"] = candidates
        self.models.append(entry)

    def header(self, ex: "Exchange") -> str:
        rule = ex.route_rule
        body: dict[str, Any] = {"rule": rule.name if rule is not None else None,
                                "task": ex.task, "models": self.models,
                                "skipped": self.skipped,
                                "attempts": [{"target": a.target.label,
                                              "error": a.error_class.value
                                              if a.error_class is not None else None}
                                             for a in ex.attempts]}
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        while len(text) > MAX_HEADER and (self.skipped or any(m["candidates"] for m in self.models)):
            if self.skipped:
                self.skipped.pop()
            else:
                next(m for m in reversed(self.models) if m["candidates"])["candidates"].pop()
            body["truncated"] = True
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        return text


def numbers(strategy: str, ordered: Sequence["TargetConfig"], view: View,
            weights: "AdaptiveWeights", task: str | None,
            notes: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each candidate in order with what its strategy ranked it by; and what the strategy
    decided for the whole pick (affinity's session, adaptive's weights)."""
    out: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    stats = view.stats
    scale = Scale(ordered, view, task) if strategy == "adaptive" else None
    loads = (notes or {}).pop("loads", {}) if strategy == "affinity" else {}
    for i, target in enumerate(ordered):
        label = target.label
        entry: dict[str, Any] = {"target": label, "rank": i + 1}
        if target.tier is not None:
            entry["tier"] = target.tier
        if strategy == "weighted":
            entry["weight"] = target.weight
        elif strategy == "least_busy":
            entry["in_flight"] = stats.get(label).in_flight
        elif strategy == "least_tokens":
            entry["tokens_in_flight"] = view.tokens.get(label)
        elif strategy == "lowest_latency":
            latency = stats.get(label).latency_ms
            entry["latency_ms"] = None if latency is None else round(latency, 3)
        elif strategy == "cheapest":
            cost = price(target)
            entry["price"] = None if cost == float("inf") else round(cost, 6)
        elif scale is not None:
            parts = adaptive_parts(target, scale.stats[i], view, scale)
            penalty = view.penalty(label)
            entry["score"] = round(adaptive_score(parts, weights, penalty), 6)
            if penalty != 1.0:
                entry["slo_penalty"] = penalty  # a breached SLO (adaptive: true)
            entry.update(zip(("success", "speed", "thrift", "health", "quality"),
                             (round(p, 6) for p in parts)))
        elif label in loads:
            entry["load"], entry["cap"] = loads[label]
        out.append(entry)
    if scale is not None:
        extra["weights"] = {k: getattr(weights, k) for k in
                            ("success", "latency", "cost", "health", "quality")}
    if notes:
        extra.update(notes)
    return out, extra
