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
