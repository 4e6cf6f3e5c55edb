"""Redis stores against a real Redis on loopback (own key prefix, cleaned up).

Locally a missing Redis skips with the reason; in CI (CI=true) it fails.
"""

from __future__ import annotations

import calendar
import asyncio
import os
import socket
import uuid

import pytest

from policies.cache import CachedAnswer
from proxy.server.configure import ConfigError, parse_config
from proxy.core.errors import GatewayError
from proxy.state.stores_redis import (
    RedisBudgetStore,
    RedisCacheStore,
    RedisCounterStore,
    RedisRateStore,
    RedisState,
    SharedStatsStore,
)

REDIS_URL = os.environ.get("GATEWISE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require(host: str, port: int, what: str) -> None:
    """Skip (locally) or fail (CI=true) when a service is not listening."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        message = f"{what} is not reachable on {host}:{port}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI must run this test)")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def make_state():
    require("127.0.0.1", 6379, "Redis")
    prefix = f"gwtest:{uuid.uuid4().hex[:8]}:"
    states: list[RedisState] = []

    async def make(instances: int = 1, url: str = REDIS_URL) -> RedisState:
        state = RedisState(url, prefix, instances, interval=0.05)
        await state.start()
        states.append(state)
        return state

    yield make
    for state in states:  # first: a running monitor would write its keys again
        await state.close()
    cleaner = RedisState(REDIS_URL, prefix)
    keys = [k async for k in cleaner.client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await cleaner.client.delete(*keys)
    await cleaner.client.aclose()


async def drain(state: RedisState) -> None:
    while state._tasks:
        await asyncio.gather(*list(state._tasks))


async def test_gcra_admits_the_limit_and_says_when_to_retry(make_state):
    a, b = await make_state(), await make_state()
    rates_a, rates_b = RedisRateStore(a), RedisRateStore(b)
    results = []
    for i in range(6):  # two instances, one bucket
        ok, window = await (rates_a if i % 2 else rates_b).take_async("rpm:k", 5, 1)
        results.append((ok, window.remaining))
    assert [r[0] for r in results] == [True] * 5 + [False]
    assert [r[1] for r in results[:5]] == [4, 3, 2, 1, 0]
    ok, window = await rates_a.take_async("rpm:k", 5, 1)
    assert not ok and 0 < window.retry_after_s <= 12.0 and window.reset_s > 40
    rates_a.adjust("rpm:k", 5, -1)  # a refused tpm check gives the request back
    await drain(a)
    assert (await rates_b.take_async("rpm:k", 5, 1))[0]
    ok, window = await rates_a.take_async("tpm:k", 100, 101)
    assert not ok  # more than the limit never fits


async def test_concurrency_is_shared_and_a_dead_instance_frees_its_slots(make_state):
    a, b = await make_state(), await make_state()
    cc_a, cc_b = RedisCounterStore(a), RedisCounterStore(b)
    assert await cc_a.acquire_async("cc:k", 2)
    assert await cc_b.acquire_async("cc:k", 2)
    assert not await cc_a.acquire_async("cc:k", 2)
    cc_b.release("cc:k")
    await drain(b)
    assert await cc_a.acquire_async("cc:k", 2)
    assert not await cc_b.acquire_async("cc:k", 2)
    await a.client.delete(a.key("inst", a.instance_id))  # instance a crashed: no heartbeat
    assert await cc_b.acquire_async("cc:k", 2)


async def test_reserve_is_checked_and_held_atomically_across_instances(make_state):
    a, b = await make_state(), await make_state()
    sa, sb = RedisBudgetStore(a), RedisBudgetStore(b)
    scopes = [("key:k:2026-01-05", 1.0), ("global:2026-01-05", 10.0)]
    results = await asyncio.gather(*(
        (sa if i % 2 else sb).reserve_async(scopes, 0.3, f"r{i}") for i in range(10)))
    assert sorted(r is None for r in results) == [False] * 7 + [True] * 3
    assert sa.used("key:k:2026-01-05")[1] in (pytest.approx(0.9), pytest.approx(0.6),
                                              pytest.approx(0.3), 0.0)
    admitted = [i for i, r in enumerate(results) if r is None]
    for i in admitted:
        assert await sa.settle_async([s for s, _ in scopes], 0.1, f"r{i}")
    assert await sa.reserve_async(scopes, 0.7, "late") is None  # 0.3 spent + 0.7 fits
    spent, held = sa.used("key:k:2026-01-05")
    assert spent == pytest.approx(0.3) and held == pytest.approx(0.7)
    ttl = await a.client.ttl(a.key("b", "key:k:2026-01-05"))
    assert ttl > 0  # period keys expire (a day after the period, never in the past)


async def test_a_retried_reconcile_counts_once(make_state):
    state = await make_state()
    store = RedisBudgetStore(state)
    scope = ["key:k:total"]
    assert await store.reserve_async([(scope[0], 5.0)], 1.0, "req-1") is None
    assert await store.settle_async(scope, 0.25, "req-1") is True
    assert await store.settle_async(scope, 0.25, "req-1") is False  # retried
    store.settle(scope, 1.0, 0.25, rid="req-1")  # and once more through the sync path
    await drain(state)
    raw = await state.client.hgetall(state.key("b", scope[0]))
    assert float(raw[b"spent"]) == pytest.approx(0.25) and float(raw[b"held"]) == 0.0
    assert await state.client.ttl(state.key("b", scope[0])) == -1  # `total` never expires


async def test_a_crashed_owners_hold_is_freed_after_its_ttl(make_state):
    state = await make_state()
    store = RedisBudgetStore(state, hold_ttl_s=0.2)
    assert await store.reserve_async([("global:total", 1.0)], 0.9, "lost") is None
    assert await store.reserve_async([("global:total", 1.0)], 0.9, "next") == "global:total"
    await asyncio.sleep(0.25)
    assert await store.reserve_async([("global:total", 1.0)], 0.9, "next") is None


async def test_close_returns_even_when_the_client_swallows_the_cancel():
    # Under load the redis client can turn a cancellation that lands inside a command
    # into an error, which the health tick handles: the monitor must still stop, or
    # close() (and with it a gatewise shutdown) waits for ever.
    require("127.0.0.1", 6379, "Redis")
    # Its own state, not the fixture's: were close() to hang, teardown must not.
    state = RedisState(REDIS_URL, f"gwtest:{uuid.uuid4().hex[:8]}:", interval=0.05)
    await state.start()
    ticks = 0

    async def swallowing_check(initial: bool = False) -> None:
        nonlocal ticks
        ticks += 1
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # as an error handled inside the tick

    state.check = swallowing_check
    try:
        async with asyncio.timeout(2):
            while not ticks:
                await asyncio.sleep(0.01)
            await state.close()
    finally:
        await state.client.aclose()
        cleaner = RedisState(REDIS_URL, state.prefix)
        await cleaner.client.delete(state.key("alive"), state.key("inst", state.instance_id))
        await cleaner.client.aclose()


async def test_seeding_from_the_ledger_is_idempotent_across_instances(make_state):
    a, b = await make_state(), await make_state()
    sa, sb = RedisBudgetStore(a), RedisBudgetStore(b)
    await asyncio.gather(sa.seed({"global:total": 4.0}), sb.seed({"global:total": 4.0}),
                         sa.seed({"global:total": 4.0}))
    assert sa.used("global:total") == (4.0, 0.0)
    assert await sb.settle_async(["global:total"], 1.0, "x")
    await sa.seed({"global:total": 4.0})  # a restart later: never added again
    raw = await a.client.hget(a.key("b", "global:total"), "spent")
    assert float(raw) == 5.0


async def test_cache_round_trip_with_ttl(make_state):
    state = await make_state()
    store = RedisCacheStore(state, ttl=0.3)
    assert await store.get_async("k1") is None
    store.set("k1", CachedAnswer(b'{"id":"x"}', "openai/gpt-4o"))
    await drain(state)
    assert await store.get_async("k1") == CachedAnswer(b'{"id":"x"}', "openai/gpt-4o")
    assert 0 < await state.client.pttl(state.key("cache", "k1")) <= 300
    store.set("k2", CachedAnswer(b"{}", None))
    await drain(state)
    assert await store.get_async("k2") == CachedAnswer(b"{}", None)


async def test_a_cool_down_is_seen_by_the_other_instance(make_state):
    a, b = await make_state(), await make_state()
    sa, sb = SharedStatsStore(a, ["p/m"]), SharedStatsStore(b, ["p/m"])
    sa.cool_down("p/m", 5.0)
    await drain(a)
    assert sb.cooling("p/m") == 0
    await sb.poll()
    assert 4.0 < sb.cooling("p/m") <= 5.0


async def test_outage_falls_back_per_instance_and_fails_budgets_closed(make_state):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    state = await make_state(instances=3, url=dead)
    assert not state.up
    rates = RedisRateStore(state)
    oks = [(await rates.take_async("rpm:k", 60, 1))[0] for _ in range(25)]
    assert oks.count(True) == 20  # 60 ÷ 3 instances
    with pytest.raises(GatewayError) as info:
        await RedisBudgetStore(state).reserve_async([("global:total", 1.0)], 0.1, "r")
    assert info.value.status == 503 and info.value.headers["retry-after"] == "5"
    assert await RedisBudgetStore(state, fail_open=True).reserve_async(
        [("global:total", 1.0)], 0.1, "r") is None
    cc = RedisCounterStore(state)
    assert [await cc.acquire_async("cc:k", 6) for _ in range(3)] == [True, True, False]
    store = RedisBudgetStore(state)
    store.settle(["global:total"], 0.1, 0.05, rid="kept")
    await asyncio.sleep(0)
    assert len(state.replay) == 1  # written once Redis answers again


def test_state_config_fields_and_problems():
    base = "providers: {o: {type: mock}}\nmodels: {m: {targets: [{provider: o, model: echo}]}}\n"
    config = parse_config(base + """state:
  backend: redis
  url: redis://:s3cret-password@redis:6379/0
  prefix: "gw:"
  instances: 3
  on_outage: {budgets: fail_open}
  ledger: postgresql://gw:pg-secret-pw@db/gatewise
""", {})
    state = config.state
    assert (state.backend, state.prefix, state.instances, state.budgets_on_outage) == \
        ("redis", "gw:", 3, "fail_open")
    assert state.postgres == "postgresql://gw:pg-secret-pw@db/gatewise" and state.ledger is None
    assert "s3cret-password" in config.secrets() and "pg-secret-pw" in config.secrets()
    assert "s3cret" not in repr(state) and "pg-secret" not in repr(state)
    with pytest.raises(ConfigError) as info:
        parse_config(base + """state:
  backend: etcd
  url: http://x
  instances: 0
  on_outage: {budgets: maybe, rates: x}
  ledger: mysql://x
""", {})
    problems = info.value.problems
    assert any(p.startswith("state.backend: must be one of memory, redis") for p in problems)
    assert "state.url: must be a redis://, rediss:// or unix:// URL" in problems
    assert any(p.startswith("state.instances:") for p in problems)
    assert any(p.startswith("state.on_outage.budgets: must be one of fail_closed, fail_open")
               for p in problems)
    assert any(p.startswith("state.on_outage.rates:") for p in problems)
    assert any(p.startswith("state.ledger: must be sqlite:PATH, postgresql://") for p in problems)


def test_a_busy_pool_is_not_an_outage():
    # Regression: under load redis-py's pool raised MaxConnectionsError past 100
    # connections and every such error flipped the gateway into degraded mode
    # (budgets failing closed). Pool exhaustion is load, not Redis being down.
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MaxConnectionsError, TimeoutError as RedisTimeout

    from proxy.state.stores_redis import pool_busy

    assert pool_busy(MaxConnectionsError("Too many connections"))
    assert pool_busy(RedisConnectionError("No connection available."))
    assert not pool_busy(RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."))
    assert not pool_busy(RedisTimeout("Timeout reading from socket"))


async def test_target_limits_reconcile_in_the_bucket_they_took_from(make_state):
    # Regression: per-target limits take from the local share (dispatcher gates are
    # synchronous) but their reconcile went to Redis, which never saw the take: one
    # wasted round trip a request, and two buckets each wrong.
    state = await make_state(instances=2)
    store = RedisRateStore(state)
    calls = []
    real_run = state.run

    async def counting_run(name, keys, args):
        calls.append(name)
        return await real_run(name, keys, args)

    state.run = counting_run
    ok, window = store.take("tpm:up/m", 1000, 400)  # the local share: 1000 / 2
    assert ok and window.remaining == 100
    store.adjust_local("tpm:up/m", 1000, -300)  # it really used 100
    await drain(state)
    assert calls == []  # nothing of this went to Redis
    assert store.take("tpm:up/m", 1000, 350)[0]  # 100 + 350 <= 500: the refund counted


async def test_a_keys_two_limits_are_taken_together_or_not_at_all(make_state):
    state = await make_state()
    rates = RedisRateStore(state)
    calls = []
    real_run = state.run

    async def counting_run(name, keys, args):
        calls.append(name)
        return await real_run(name, keys, args)

    state.run = counting_run
    ok, req, tok = await rates.take_pair_async(("rpm:k", 10, 1), ("tpm:k", 100, 60))
    assert ok and req.remaining == 9 and tok.remaining == 40
    ok, req, tok = await rates.take_pair_async(("rpm:k", 10, 1), ("tpm:k", 100, 60))
    assert not ok and tok.retry_after_s > 0 and req.retry_after_s == 0  # tokens refused
    ok, req, tok = await rates.take_pair_async(("rpm:k", 10, 1), ("tpm:k", 100, 40))
    assert ok and req.remaining == 8  # the refused request took no request slot
    assert calls == ["gcra_pair"] * 3  # one round trip each, no undo


async def test_close_ends_the_monitor_even_when_redis_swallows_its_cancel():
    """redis-py may turn a cancel that lands mid-command into a ConnectionError;
    close() must still end the health loop instead of waiting for it for ever."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    class Pipe:
        def exists(self, *a): pass
        def set(self, *a, **k): pass

        async def execute(self):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise RedisConnectionError("connection closed while reading") from None

    class Client:
        def register_script(self, src): return None
        def pipeline(self, transaction=False): return Pipe()
        async def delete(self, *keys): return 0
        async def aclose(self): pass

    state = RedisState("redis://unused", "t:", interval=0.01, client=Client())
    state.up = True
    state._monitor = asyncio.get_running_loop().create_task(state._watch())
    await asyncio.sleep(0.05)  # the loop is now inside a hung command
    async with asyncio.timeout(2):
        await state.close()
    assert state._monitor.done()


def test_budget_keys_expire_a_day_after_their_period():
    from proxy.state.stores_redis import _expire_at
    day = calendar.timegm((2026, 12, 7, 0, 0, 0))
    assert _expire_at("key:app:2026-12-06") == day + 86400  # the day ends, then one more
    assert _expire_at("global:2026-12") == calendar.timegm((2027, 1, 2, 0, 0, 0))
    assert _expire_at("global:total") == 0
    assert _expire_at("key:app:2026-13-01") == 0
