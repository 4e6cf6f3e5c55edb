"""Routing: which of a model's targets to try first.

First the capability filter drops targets that cannot serve the request
(tools, images, JSON schema output, a context window too small for the
estimated prompt plus `max_tokens`). Then the model's strategy orders the
rest; the dispatcher tries them in that order. Each strategy is a small
function `(targets, view) -> ordered list`; a pick is a few attribute reads
and at most one sort of a handful of targets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from proxy.config.routing import AdaptiveWeights
from proxy.core.pricing import estimate_body

if TYPE_CHECKING:
    from proxy.config.types import TargetConfig
    from proxy.state.target_stats import MemoryStatsStore

Targets = Sequence["TargetConfig"]


# --- what the request needs -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Needs:
    tools: bool = False
    vision: bool = False
    json_schema: bool = False
    tokens: int = 0  # estimated prompt tokens + the completion's max tokens


def _has_image(messages: Any) -> bool:
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                    return True
    return False


def request_needs(body: Mapping[str, Any], prompt_tokens: int | None = None, *,
                  sized: bool = True) -> Needs:
    """`prompt_tokens`: the exchange's estimate (proxy/core/pricing.py), so one estimator
    serves limits, budgets and routing; computed here when not given. `sized=False`
    leaves the context window to the upstream (tokens 0: nothing is estimated)."""
    messages = body.get("messages")
    response_format = body.get("response_format")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not sized:
        prompt, max_tokens = 0, 0
    elif prompt_tokens is None:
        prompt = estimate_body(body).prompt_tokens
    else:
        prompt = prompt_tokens
    return Needs(
        tools=bool(body.get("tools") or body.get("functions")),
        vision=_has_image(messages),
        json_schema=isinstance(response_format, dict) and response_format.get("type") == "json_schema",
        tokens=prompt + (max_tokens if isinstance(max_tokens, int) else 0),
    )


def lacks(target: "TargetConfig", needs: Needs) -> str | None:
    """What the target lacks for this request, or None when it can serve it."""
    info = target.info
    caps = info.capabilities
    if needs.tools and "tools" not in caps:
        return "tools"
    if needs.vision and "vision" not in caps:
        return "images"
    if needs.json_schema and "json_schema" not in caps:
        return "json_schema"
    if info.context_window is not None and needs.tokens > info.context_window:
        return "context_window"
    return None


# --- the strategies -----------------------------------------------------------------

class View:
    """What strategies may read: live stats, breaker health, per-model counters."""

    def __init__(self, stats: "MemoryStatsStore", health: Callable[[str], float] | None = None,
                 rng: random.Random | None = None,
                 penalty: Callable[[str], float] | None = None) -> None:
        self.stats = stats
        self.health = health or (lambda label: 1.0)
        self.penalty = penalty or (lambda label: 1.0)  # adaptive: a breached SLO halves
        self.rng = rng or random.Random()
        self.counters: dict[str, int] = {}

    def tick(self, key: str) -> int:
        n = self.counters.get(key, 0)
        self.counters[key] = n + 1
        return n


def priority(targets: Targets, view: View, key: str = "") -> list:
    return list(targets)


def round_robin(targets: Targets, view: View, key: str = "") -> list:
    n = len(targets)
    if n < 2:
        return list(targets)
    start = view.tick(key) % n
    return list(targets[start:]) + list(targets[:start])


def weighted(targets: Targets, view: View, key: str = "") -> list:
    """The first target drawn by weight; the rest follow in config order."""
    total = 0  # what sum() gives, added in the same order
    for t in targets:
        total += t.weight
    if len(targets) < 2 or total <= 0:
        return list(targets)
    point = view.rng.random() * total
    for i, target in enumerate(targets):
        point -= target.weight
        if point < 0 and target.weight > 0:
            return [target, *targets[:i], *targets[i + 1:]]
    return list(targets)


def least_busy(targets: Targets, view: View, key: str = "") -> list:
    get = view.stats.get
    return sorted(targets, key=lambda t: get(t.label).in_flight)


def lowest_latency(targets: Targets, view: View, key: str = "") -> list:
    """Fastest time to first token first; a target with no sample yet goes first so
    it gets one."""
    get = view.stats.get

    def latency(t: "TargetConfig") -> float:
        value = get(t.label).latency_ms
        return -1.0 if value is None else value

    return sorted(targets, key=latency)


def price(target: "TargetConfig") -> float:
    """USD per million tokens, input and output averaged; unpriced targets last."""
    info = target.info
    if not info.priced:
        return float("inf")
    return (info.input + info.output) / 2


def cheapest(targets: Targets, view: View, key: str = "") -> list:
    return sorted(targets, key=price)


def adaptive_score(target: "TargetConfig", view: View, weights: AdaptiveWeights,
                   slowest: float, dearest: float) -> float:
    stats = view.stats.get(target.label)
    latency = stats.latency_ms
    speed = 1.0 if latency is None or slowest <= 0 else 1.0 - latency / slowest
    cost = price(target)
    thrift = 0.0 if cost == float("inf") else (1.0 if dearest <= 0 else 1.0 - cost / dearest)
    return (weights.success * stats.success_rate + weights.latency * speed
            + weights.cost * thrift + weights.health * view.health(target.label)) \
        * view.penalty(target.label)


def adaptive(targets: Targets, view: View, key: str = "",
             weights: AdaptiveWeights = AdaptiveWeights()) -> list:
    """Highest composite score first: success rate, speed, thrift and health, each in
    [0, 1] relative to the other targets, weighted from the YAML."""
    if len(targets) < 2:
        return list(targets)
    get = view.stats.get
    slowest = max((get(t.label).latency_ms or 0.0) for t in targets)
    prices = [price(t) for t in targets]
    dearest = max((p for p in prices if p != float("inf")), default=0.0)
    return sorted(targets, key=lambda t: -adaptive_score(t, view, weights, slowest, dearest))


STRATEGIES: dict[str, Callable[..., list]] = {
    "priority": priority, "round_robin": round_robin, "weighted": weighted,
    "least_busy": least_busy, "lowest_latency": lowest_latency, "cheapest": cheapest,
    "adaptive": adaptive,
}


def is_free(target: "TargetConfig") -> bool:
    info = target.info
    return info.priced and info.input == 0 and info.output == 0


class Router:
    """Orders a model's capable targets by its strategy (and the budget's hint)."""

    def __init__(self, view: View, weights: Mapping[str, AdaptiveWeights] | None = None) -> None:
        self.view = view
        self.weights = weights or {}

    def order(self, model_name: str, strategy: str, targets: Targets,
              hint: str | None = None) -> list:
        if hint == "free_only":
            targets = [t for t in targets if is_free(t)]
        if hint in ("cheaper", "free_only"):
            return cheapest(targets, self.view)
        if strategy == "adaptive":
            weights = self.weights.get(model_name, AdaptiveWeights())
            return adaptive(targets, self.view, model_name, weights)
        return STRATEGIES[strategy](targets, self.view, model_name)
