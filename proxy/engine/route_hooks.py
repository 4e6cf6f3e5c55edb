"""What the dispatcher asks of a request's route before ordering a model's targets,
and what it tells an explanation afterwards.

A route rule (policies/routes.py matched it) applies to the model it routed
to: its `targets:` subset and its strategy replace the model's own. Fallback
models keep theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from proxy.config.routing import StrategySpec
from proxy.engine.explain import numbers
from proxy.engine.routing import _DEFAULT_WEIGHTS, Needs, Router, lacks

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.exchange import Exchange


def route_for(ex: "Exchange", model: "ModelConfig"
              ) -> tuple[Sequence["TargetConfig"], StrategySpec | None, str]:
    """The targets to choose from, the rule's strategy options (None: the model's), and
    the strategy's name."""
    rule = ex.route_rule
    if rule is None or model is not ex.model:  # (the dispatcher tests the first itself)
        return model.targets, None, model.strategy
    spec = rule.strategy
    targets = rule.subsets.get(model.name, ()) if rule.subsets is not None else model.targets
    return targets, spec, spec.name if spec is not None else model.strategy


def demotion(dispatcher: Any, label: str) -> str | None:
    """Why the dispatcher moves a target last, or None."""
    if dispatcher.stats.cooling(label) > 0:
        return "cooling"
    if dispatcher.breakers.is_open(label):
        return "breaker_open"
    if dispatcher.health_score(label) == 0:
        return "health"
    return None


def explain_order(ex: "Exchange", model: "ModelConfig", targets: Sequence["TargetConfig"],
                  ordered: list["TargetConfig"], needs: Needs | None,
                  spec: StrategySpec | None, notes: dict | None, router: Router,
                  demoted: Callable[[str], str | None]) -> None:
    """Record one model's ordering: each candidate's numbers, and every target of the
    model that is not a candidate (outside the rule's subset, lacking a capability,
    kept out by the budget's hint) or that went last."""
    explain = ex.explain
    chosen = {id(t) for t in targets}
    listed = {id(t) for t in ordered}
    for target in model.targets:
        if id(target) not in chosen:
            explain.skip(target.label, "rule")
        elif needs is not None and (missing := lacks(target, needs)) is not None:
            explain.skip(target.label, "capability", missing)
        elif id(target) not in listed:
            explain.skip(target.label, "budget", ex.routing_hint)
    strategy = ex.strategy or model.strategy
    weights = spec.weights if spec is not None else \
        router.weights.get(model.name, _DEFAULT_WEIGHTS)
    candidates, extra = numbers(strategy, ordered, router.view, weights, ex.task, notes)
    for entry in candidates:
        reason = demoted(entry["target"])
        if reason is not None:
            entry["last"] = reason
    if ex.routing_hint is not None:
        extra["budget_hint"] = ex.routing_hint
    explain.ordered(model.name, strategy, candidates, extra)
