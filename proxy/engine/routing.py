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

from proxy.config.routing import AdaptiveWeights, AffinityConfig, StrategySpec
from proxy.core.pricing import estimate_body
from proxy.engine.affinity import Affinity
from proxy.state.route_stats import TaskStats, TokenLoad

if TYPE_CHECKING:
    from proxy.config.types import TargetConfig
    from proxy.core.exchange import Exchange
    from proxy.state.target_stats import MemoryStatsStore, TargetStats

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
                  sized: bool = True, capabilities: bool = True) -> Needs:
    """`prompt_tokens`: the exchange's estimate (proxy/core/pricing.py), so one estimator
    serves limits, budgets and routing; computed here when not given. `sized=False`
    leaves the context window to the upstream (tokens 0: nothing is estimated);
    `capabilities=False` the body's tools, images and schema unsearched (every target
    has them all)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not sized:
        prompt, max_tokens = 0, 0
    elif prompt_tokens is None:
        prompt = estimate_body(body).prompt_tokens
    else:
        prompt = prompt_tokens
    if not capabilities:
        return Needs(tokens=prompt + (max_tokens if isinstance(max_tokens, int) else 0))
    messages = body.get("messages")
    response_format = body.get("response_format")
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
    """What strategies may read: live stats, breaker health, per-model counters, tokens
    in flight and what was learned per task kind."""

    def __init__(self, stats: "MemoryStatsStore", health: Callable[[str], float] | None = None,
                 rng: random.Random | None = None,
                 penalty: Callable[[str], float] | None = None,
                 tokens: TokenLoad | None = None, tasks: TaskStats | None = None) -> None:
        self.stats = stats
        self.health = health or (lambda label: 1.0)
        self.penalty = penalty or (lambda label: 1.0)  # adaptive: a breached SLO halves
        self.rng = rng or random.Random()
        self.counters: dict[str, int] = {}
        self.tokens = tokens if tokens is not None else TokenLoad()
        self.tasks = tasks if tasks is not None else TaskStats()

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


def least_tokens(targets: Targets, view: View, key: str = "") -> list:
    """Fewest estimated tokens in flight (prompt + output cap), every instance's counted
    when the state is shared; ties keep config order."""
    get = view.tokens.get
    return sorted(targets, key=lambda t: get(t.label))


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


def quality(target: "TargetConfig", task: str | None) -> float:
    """The target's score for the task kind, else its `default`, else 0."""
    scores = target.quality
    if not scores:
        return 0.0
    value = scores.get(task) if task is not None else None
    return scores.get("default", 0.0) if value is None else value


class Scale:
    """What adaptive scores are relative to, for one pick: the slowest latency and the
    dearest price among the candidates, each target's statistics (for the task kind
    where it has been learned, else overall)."""

    __slots__ = ("stats", "slowest", "dearest", "task")

    def __init__(self, targets: Targets, view: View, task: str | None) -> None:
        learned = view.tasks.of(task) if task is not None else {}
        get = view.stats.get
        self.stats: list["TargetStats"] = [learned.get(t.label) or get(t.label) for t in targets]
        self.slowest = max((s.latency_ms or 0.0) for s in self.stats) if targets else 0.0
        prices = [price(t) for t in targets]
        self.dearest = max((p for p in prices if p != float("inf")), default=0.0)
        self.task = task


def adaptive_parts(target: "TargetConfig", stats: "TargetStats", view: View,
                   scale: Scale) -> tuple[float, float, float, float, float]:
    """success, speed, thrift, health, quality: each in [0, 1]."""
    latency = stats.latency_ms
    speed = 1.0 if latency is None or scale.slowest <= 0 else 1.0 - latency / scale.slowest
    cost = price(target)
    dearest = scale.dearest
    thrift = 0.0 if cost == float("inf") else (1.0 if dearest <= 0 else 1.0 - cost / dearest)
    return (stats.success_rate, speed, thrift, view.health(target.label),
            quality(target, scale.task))


def adaptive_score(parts: tuple[float, float, float, float, float],
                   weights: AdaptiveWeights, penalty: float = 1.0) -> float:
    """The weighted sum, times the target's SLO penalty (a breach halves it)."""
    success, speed, thrift, health, score = parts
    return (weights.success * success + weights.latency * speed + weights.cost * thrift
            + weights.health * health + weights.quality * score) * penalty


def adaptive(targets: Targets, view: View, key: str = "",
             weights: AdaptiveWeights = AdaptiveWeights(), task: str | None = None) -> list:
    """Highest composite score first: success rate, speed, thrift, health and quality for
    the task kind, each in [0, 1] relative to the other targets, weighted from the YAML."""
    if len(targets) < 2:
        return list(targets)
    scale = Scale(targets, view, task)
    penalty = view.penalty
    scores = [-adaptive_score(adaptive_parts(t, s, view, scale), weights, penalty(t.label))
              for t, s in zip(targets, scale.stats)]
    order = sorted(range(len(targets)), key=scores.__getitem__)
    return [targets[i] for i in order]


STRATEGIES: dict[str, Callable[..., list]] = {
    "priority": priority, "round_robin": round_robin, "weighted": weighted,
    "least_busy": least_busy, "least_tokens": least_tokens, "lowest_latency": lowest_latency,
    "cheapest": cheapest, "adaptive": adaptive,
}


def is_free(target: "TargetConfig") -> bool:
    info = target.info
    return info.priced and info.input == 0 and info.output == 0


class Router:
    """Orders a model's capable targets by its strategy (or a route rule's), and the
    budget's hint."""

    def __init__(self, view: View, weights: Mapping[str, AdaptiveWeights] | None = None, *,
                 models: Mapping[str, Any] | None = None,
                 affinity: Mapping[str, AffinityConfig] | None = None) -> None:
        self.view = view
        self.weights = weights or {}
        self.affinity_config = affinity or {}
        self.affinity = Affinity(models or {}, view)

    def order(self, model_name: str, strategy: str, targets: Targets,
              hint: str | None = None, ex: "Exchange | None" = None,
              spec: StrategySpec | None = None, notes: dict | None = None,
              down: "set[int] | None" = None) -> list:
        """`spec`: a route rule's strategy options (else the model's); `notes`: filled
        with what affinity decided, for an explanation; `down`: ids of targets the
        dispatcher will move last (affinity leaves them out of its loads)."""
        if hint == "free_only":
            targets = [t for t in targets if is_free(t)]
        if hint in ("cheaper", "free_only"):
            return cheapest(targets, self.view)
        if strategy == "adaptive":
            weights = spec.weights if spec is not None else \
                self.weights.get(model_name, _DEFAULT_WEIGHTS)
            return adaptive(targets, self.view, model_name, weights,
                            ex.task if ex is not None else None)
        if strategy == "affinity":
            config = spec.affinity if spec is not None else \
                self.affinity_config.get(model_name, _DEFAULT_AFFINITY)
            return self.affinity.order(model_name, targets, ex, config, notes, down)
        return STRATEGIES[strategy](targets, self.view, model_name)


_DEFAULT_WEIGHTS = AdaptiveWeights()
_DEFAULT_AFFINITY = AffinityConfig()
