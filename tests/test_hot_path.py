"""Properties of the hot path that are not timings: what a request leaves behind."""

from __future__ import annotations

import gc

import pytest

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from proxy.core.exchange import Exchange
from proxy.server.gateway import GATEWAY

CONFIG = """
providers: {offline: {type: mock}, other: {type: mock}}
models:
  one: {targets: [{provider: offline, model: echo}]}
  two:
    strategy: weighted
    targets: [{provider: offline, model: echo}, {provider: other, model: echo}]
    fallbacks: [one]
"""


@pytest.mark.parametrize("model", ["one", "two"])
async def test_a_request_leaves_no_garbage_for_the_cyclic_gc(model):
    # Regression: a reference cycle (the plan's order callback captured the plan)
    # left every Exchange to the cyclic GC, whose collections cost ~40 µs a request.
    config = parse_config(CONFIG, {})
    app = build_app(config)
    gateway = app[GATEWAY]
    lifespan = gateway.lifespan(app).__aiter__()
    await lifespan.__anext__()

    async def one() -> None:
        ex = Exchange(request_id="r", http=None, model=config.models[model], stream=False,
                      body={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        await gateway.pipeline(ex)
        assert ex.status == 200

    await one()
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            await one()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, Exchange)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        try:
            await lifespan.__anext__()
        except StopAsyncIteration:
            pass
    assert leaked == []


async def test_a_sync_before_check_is_seen_by_the_policies_around_it():
    # `before` links a policy without a coroutine: its refusal must still reach the
    # outer policies' except clauses, and the inner ones must not run.
    from proxy.core.pipeline import Pipeline

    seen: list[str] = []

    class Outer:
        async def __call__(self, ex, call_next):
            try:
                await call_next(ex)
            except ValueError:
                seen.append("outer saw it")
                raise

    class Check:
        def before(self, ex):
            seen.append("checked")
            if ex == "refuse":
                raise ValueError("no")

        async def __call__(self, ex, call_next):  # (not used when `before` is there)
            raise AssertionError

    async def terminal(ex):
        seen.append("dispatched")

    pipeline = Pipeline([Outer(), Check()], terminal)
    await pipeline("fine")
    with pytest.raises(ValueError):
        await pipeline("refuse")
    assert seen == ["checked", "dispatched", "checked", "outer saw it"]


async def test_a_pair_of_buckets_takes_like_two_takes():
    # take_pair's one-step path must leave the buckets and report the windows exactly
    # as `take` twice (and a refusal as before: both or neither).
    from proxy.state.stores import MemoryRateStore

    class Clock:
        t = 0.0

        def is_closed(self):
            return False

        def time(self):
            return self.t

    clock = Clock()
    paired, single = MemoryRateStore(), MemoryRateStore()
    paired._loop = single._loop = clock
    for step, tokens in enumerate([100, 300, 500, 50, 0, 800, 40]):
        clock.t = step * 7.5
        ok, requests, window = paired.take_pair(("rpm:k", 3, 1), ("tpm:k", 1000, tokens))
        ok1, w1 = single.take("rpm:k", 3, 1)
        ok2, w2 = single.take("tpm:k", 1000, tokens) if ok1 \
            else (False, single.peek("tpm:k", 1000))
        if ok1 and not ok2:
            single.adjust("rpm:k", 3, -1)
        assert (ok, requests, window) == (ok1 and ok2, w1, w2)
        for name in ("rpm:k", "tpm:k"):
            assert paired._buckets[name]._level == single._buckets[name]._level


async def test_bound_metric_cells_render_as_observed_ones():
    # Metrics.record adds to cells it bound once; the exposition must be the one that
    # Histogram.observe gives.
    from policies.prometheus import Histogram
    from policies.metrics import DURATION_BUCKETS

    observed = Histogram("h", "help", ("a",), DURATION_BUCKETS)
    bound = Histogram("h", "help", ("a",), DURATION_BUCKETS)
    cell = bound.cell(("x",))
    from bisect import bisect_left
    for value in (0.0005, 0.003, 0.003, 2.0, 100.0):
        observed.observe(("x",), value)
        cell[0] += value
        cell[1 + bisect_left(DURATION_BUCKETS, value)] += 1
    out1: list[str] = []
    out2: list[str] = []
    observed.render(out1)
    bound.render(out2)
    assert out1 == out2
