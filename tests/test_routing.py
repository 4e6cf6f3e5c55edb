"""Routing strategies and the capability filter, as small pure functions."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from proxy.engine.routing import (
    STRATEGIES,
    Router,
    View,
    adaptive,
    cheapest,
    lacks,
    least_busy,
    lowest_latency,
    priority,
    request_needs,
    round_robin,
    weighted,
)
from proxy.config.catalog import ModelInfo, lookup
from proxy.config.routing import AdaptiveWeights
from proxy.config.types import TargetConfig
from proxy.state.target_stats import MemoryStatsStore


def target(name: str, weight: float = 1.0, info: ModelInfo | None = None) -> TargetConfig:
    provider, _, model = name.partition("/")
    return TargetConfig(provider=provider, model=model, weight=weight,
                        info=info if info is not None else lookup(model))


A, B, C = target("p1/gpt-4o", 3), target("p2/gpt-4o-mini", 1), target("p3/deepseek-chat", 0)


def view(seed: int = 7) -> View:
    return View(MemoryStatsStore(), rng=random.Random(seed))


def firsts(strategy, targets, v: View, n: int, key: str = "m") -> Counter:
    return Counter(strategy(targets, v, key)[0].label for _ in range(n))


def test_every_strategy_returns_a_permutation():
    v = view()
    for name, strategy in STRATEGIES.items():
        out = strategy([A, B, C], v, "m")
        assert sorted(t.label for t in out) == sorted(t.label for t in (A, B, C)), name


def test_priority_keeps_config_order():
    assert priority([A, B, C], view()) == [A, B, C]


def test_round_robin_is_exact():
    v = view()
    counts = firsts(round_robin, [A, B, C], v, 300)
    assert counts == {A.label: 100, B.label: 100, C.label: 100}
    # the rest follow in rotation, and each model has its own counter
    assert round_robin([A, B, C], v, "m") == [A, B, C]
    assert round_robin([A, B, C], v, "m") == [B, C, A]
    assert round_robin([A, B, C], v, "other") == [A, B, C]


def test_weighted_distribution_within_tolerance():
    counts = firsts(weighted, [A, B, C], view(), 20_000)
    assert abs(counts[A.label] / 20_000 - 0.75) < 0.02
    assert abs(counts[B.label] / 20_000 - 0.25) < 0.02
    assert counts[C.label] == 0  # weight 0 is never drawn first


def test_least_busy_under_concurrency():
    v = view()
    stats = v.stats
    picks: Counter = Counter()
    for _ in range(30):  # 30 requests in flight at once: each pick sees the others
        first = least_busy([A, B, C], v)[0]
        stats.started(first.label)
        picks[first.label] += 1
    assert picks == {A.label: 10, B.label: 10, C.label: 10}
    for _ in range(5):
        stats.finished(B.label, ok=True, latency_ms=1.0, error_class=None)
    assert least_busy([A, B, C], v)[0] == B


def test_lowest_latency_explores_then_converges():
    v = view()
    true_latency = {A.label: 80.0, B.label: 20.0, C.label: 50.0}
    rng = random.Random(1)
    picks = []
    for _ in range(200):
        first = lowest_latency([A, B, C], v)[0]
        picks.append(first.label)
        v.stats.started(first.label)
        v.stats.finished(first.label, ok=True, error_class=None,
                         latency_ms=true_latency[first.label] * rng.uniform(0.8, 1.2))
    assert set(picks[:3]) == {A.label, B.label, C.label}  # each measured once
    assert all(p == B.label for p in picks[3:])


def test_cheapest_orders_by_price_unpriced_last():
    unknown = target("p4/some-local-model", info=ModelInfo())
    prices = {t.label: (t.info.input + t.info.output) / 2 for t in (A, B, C)}
    ordered = cheapest([A, unknown, B, C], view())
    assert [t.label for t in ordered[:3]] == sorted(prices, key=prices.get)
    assert ordered[-1] is unknown


def test_adaptive_weights_change_the_winner():
    v = view()
    for _ in range(20):  # A: fast but failing; B: slow and reliable
        v.stats.finished(A.label, ok=False, latency_ms=10.0, error_class="server")
        v.stats.finished(B.label, ok=True, latency_ms=200.0, error_class=None)
    reliable = AdaptiveWeights(success=5, latency=0, cost=0, health=0)
    fast = AdaptiveWeights(success=0, latency=5, cost=0, health=0)
    assert adaptive([A, B], v, "m", reliable)[0] == B
    assert adaptive([A, B], v, "m", fast)[0] == A
    cheap = AdaptiveWeights(success=0, latency=0, cost=5, health=0)
    assert adaptive([A, B], v, "m", cheap)[0] == B  # gpt-4o-mini is cheaper
    sick = View(v.stats, health=lambda label: 0.0 if label == B.label else 1.0)
    assert adaptive([A, B], sick, "m", AdaptiveWeights(0, 0, 0, 5))[0] == A


def test_router_hints_from_budgets():
    free = target("p5/echo")  # the model table prices echo at zero
    router = Router(view())
    assert router.order("m", "priority", [A, B, free], hint="cheaper")[0] == free
    assert router.order("m", "priority", [A, B, free], hint="free_only") == [free]
    assert router.order("m", "priority", [A, B], hint="free_only") == []


# --- capability filter ---------------------------------------------------------------

def small(**caps) -> TargetConfig:
    # 1500 tokens: room for a short prompt with one image (~1105 tokens, as priced).
    info = ModelInfo(context_window=1500, capabilities=frozenset(caps.get("caps", ())))
    return target("p9/small", info=info)


@pytest.mark.parametrize("body,missing", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9000}}]}]},
     "images"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "json_schema"),
    ({"messages": [{"role": "user", "content": "word " * 1300}]}, "context_window"),
    ({"max_tokens": 2000}, "context_window"),
    ({"max_completion_tokens": 1500}, "context_window"),
])
def test_capability_filter(body, missing):
    body = {"messages": [{"role": "user", "content": "hi"}], **body}
    needs = request_needs(body)
    assert lacks(small(), needs) == missing
    able = small(caps=("tools", "vision", "json_schema"))
    if missing != "context_window":
        assert lacks(able, needs) is None
    assert lacks(target("p1/gpt-4.1"), needs) is None  # big, capable


def test_plain_request_fits_and_images_are_not_counted_as_text():
    # An image costs a fixed estimate (proxy/core/pricing.py), never its URL's length / 4.
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x" * 100_000}}]}], "max_tokens": 10}
    needs = request_needs(body)
    assert needs.vision and needs.tokens < 1200
    assert lacks(small(caps=("vision",)), needs) is None


async def test_picking_is_cheap_enough_for_the_hot_path():
    # Not a timing assertion: just that a pick does no I/O and no awaiting.
    v = view()
    out = [STRATEGIES[name]([A, B, C], v, "m") for name in STRATEGIES]
    assert all(out)
    await asyncio.sleep(0)
