"""Tokens in flight shared between instances through a real Redis (own key prefix)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxy.config.types import TargetConfig
from proxy.engine.routing import View, least_tokens
from proxy.state.redis_client import RedisState
from proxy.state.target_stats import MemoryStatsStore
from proxy.state.token_load_redis import RedisTokenLoad
from tests.test_redis_stores import REDIS_URL, require


@pytest.fixture
async def states():
    require("127.0.0.1", 6379, "Redis")
    prefix = f"gwtest:{uuid.uuid4().hex[:8]}:"
    made: list[RedisState] = []

    async def make() -> RedisState:
        state = RedisState(REDIS_URL, prefix, 2, interval=0.05)
        await state.start()
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()
    cleaner = RedisState(REDIS_URL, prefix)
    keys = [k async for k in cleaner.client.scan_iter(match=prefix + "*")]
    if keys:
        await cleaner.client.delete(*keys)
    await cleaner.client.aclose()


async def test_each_instance_sees_the_others_tokens_in_flight(states):
    one, two = RedisTokenLoad(await states()), RedisTokenLoad(await states())
    a, b = TargetConfig(provider="a", model="m"), TargetConfig(provider="b", model="m")
    one.add(a.label, 9000)
    two.add(b.label, 40)
    two.add("odd|label/with:chars", 7)
    await one.publish()
    await two.publish()
    await one.publish()
    assert one.get(a.label) == 9000 and one.get(b.label) == 40
    assert two.get(a.label) == 9000 and two.get(b.label) == 40
    assert one.get("odd|label/with:chars") == 7
    # instance two orders by everyone's tokens: b (40) before a (9000, all of it one's)
    view = View(MemoryStatsStore(), tokens=two)
    assert least_tokens([a, b], view) == [b, a]
    one.done(a.label, 9000)
    await one.publish()
    await two.publish()
    assert two.get(a.label) == 0
    # an instance that stops publishing is forgotten after its ttl
    one.add(a.label, 500)
    one.ttl_ms = 100
    await one.publish()
    await two.publish()
    assert two.get(a.label) == 500
    await asyncio.sleep(0.15)
    await two.publish()
    assert two.get(a.label) == 0 and two.get(b.label) == 40


async def test_redis_down_means_local_counts_only(states):
    one, two = RedisTokenLoad(await states()), RedisTokenLoad(await states())
    one.add("a/m", 100)
    await one.publish()
    await two.publish()
    assert two.get("a/m") == 100
    two.state.up = False
    assert two.get("a/m") == 0


def test_the_gateway_shares_tokens_only_when_a_strategy_needs_them():
    from proxy.server.app import build_app
    from proxy.server.configure import parse_config
    from proxy.server.gateway import GATEWAY

    text = """
providers: {a: {type: mock}, b: {type: mock}}
models:
  m: {strategy: STRATEGY, targets: [{provider: a, model: echo}, {provider: b, model: echo}]}
state: {backend: redis, url: "redis://127.0.0.1:6379/0", prefix: "gwtest-unused:"}
"""
    gateway = build_app(parse_config(text.replace("STRATEGY", "least_tokens"), {}))[GATEWAY]
    tokens = gateway.dispatcher.tokens
    assert isinstance(tokens, RedisTokenLoad)
    assert tokens.publish in gateway.shared.redis.on_tick
    gateway = build_app(parse_config(text.replace("STRATEGY", "least_busy"), {}))[GATEWAY]
    assert gateway.dispatcher.tokens is None
