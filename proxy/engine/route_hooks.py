"""How the dispatcher orders a model's targets for one request, and what it tells an
explanation.

A route rule (policies/routes.py matched it) applies to the model it routed
to: its `targets:` subset and its strategy replace the model's own. Fallback
models keep theirs. Then the capability filter, the strategy, and targets that
are cooling down, open or unhealthy moved last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from proxy.config.routing import StrategySpec
from proxy.engine.explain import numbers
from proxy.engine.routing import _DEFAULT_WEIGHTS, Needs, Router, lacks

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.exchange import Exchange


def order_targets(d: Any, ex: "Exchange", model: "ModelConfig", needs: Needs | None,
                  skips: Any) -> list["TargetConfig"]:
    """The model's capable targets (of a route rule's subset) in its strategy's (or the
    rule's) order; cooling, open or unhealthy targets go last. `d`: the dispatcher."""
    if ex.route_rule is None:
        targets, spec, strategy = model.targets, None, model.strategy
    else:
        targets, spec, strategy = route_for(ex, model)
    if needs is None:
        capable = list(targets)
    else:
        capable = []
        for target in targets:
            missing = lacks(target, needs)
            if missing is None:
                capable.append(target)
            elif skips is not None:
                skips.missing.add(missing)
    down = None  # cooling, open, unhealthy: they go last
    if len(capable) > 1:
        cooling = d.stats.cooling
        health = d.health_score
        for target in capable:  # (a loop: no comprehension frames on every request)
            label = target.label
            if cooling(label) > 0 or health(label) == 0:
                if down is None:
                    down = set()
                down.add(id(target))
    notes = {} if ex.explain is not None else None
    hint = ex.routing_hint
    ordered = d.router.order(model.name, strategy, capable, hint, ex, spec, notes, down)
    ex.strategy = strategy if hint is None else "cheapest"  # a budget's hint orders by price
    if down is not None:  # a stable sort on this key: only needed when one is down
        ordered = [t for t in ordered if id(t) not in down] + \
                  [t for t in ordered if id(t) in down]
    if ex.explain is not None:
        explain_order(ex, model, targets, ordered, needs, spec, notes, d.router,
                      lambda label: demotion(d, label))
    return ordered


def note(ex: "Exchange", label: str, reason: str, wait: float | None = None) -> None:
    """Tell the explanation (if the admin asked for one) why a target was skipped."""
    if ex.explain is not None:
        ex.explain.skip(label, reason, None if wait is None else round(wait, 3))


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
