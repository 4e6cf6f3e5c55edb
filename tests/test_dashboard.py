"""The page's JSON: what it says about targets, models, spend and budgets, that it
is built once per tick and not per view, and the charts shared through Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import orjson

from proxy.server.gateway import GATEWAY
from tests.test_redis_stores import REDIS_URL, require
from tests.test_ui_security import ADMIN, jar, login

CLIENT = "sk-gw-dash-0123456789abcdef"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}


def config(extra: str = "", usd: float = 0.05) -> str:
    return f"""
providers:
  offline: {{type: mock, latency_ms: 2}}
  gone: {{type: openai, api_key: "${{UNSET_GATEWISE_TEST_KEY}}"}}
models:
  echo:
    slo: {{latency_p95_ms: 5000, window: 5m, min_requests: 2}}
    targets: [{{provider: offline, model: echo, price: {{input: 1000, output: 1000}}}}]
  dead: {{targets: [{{provider: gone, model: gpt-4o}}]}}
keys: [{{name: app, key: {CLIENT}, budget: {{usd: {usd}, per: day, thresholds: [10%, 50%]}}}}]
admin: {{key: {ADMIN}}}
{extra}"""


async def chats(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(f"{url}/v1/chat/completions", json=CHAT,
                                 headers={"authorization": f"Bearer {CLIENT}"}) as resp:
                assert resp.status == 200, await resp.text()


async def state(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/ui/api/state") as resp:
        assert resp.status == 200
        return orjson.loads(await resp.read())


async def test_the_state_says_what_happened(start_gateway, tmp_path):
    gw = await start_gateway(config(f'state: {{ledger: "sqlite:{tmp_path}/l.db"}}'))
    watch = gw.app[GATEWAY].watch
    watch.spend_every = 0.1
    await chats(gw.url, 3)  # 3 × $0.012
    async with jar() as http:
        await login(http, gw.url)
        await state(http, gw.url)  # opens the page: spend is read from now on
        watch.tick()
        await asyncio.sleep(0.3)
        watch.tick()
        body = await state(http, gw.url)
    targets = {t["target"]: t for t in body["targets"]}
    assert targets["offline/echo"]["state"] == "up" and targets["offline/echo"]["rps"] > 0
    dead = targets["gone/gpt-4o"]
    assert dead["state"] == "down" and "UNSET_GATEWISE_TEST_KEY" in dead["reason"]
    models = {m["model"]: m for m in body["models"]}
    assert models["echo"]["state"] == "up" and models["dead"]["state"] == "down"
    assert models["echo"]["p95_ms"] is not None and models["echo"]["error_rate"] == 0.0
    assert round(body["spend"]["day"]["total_usd"], 6) == 0.036
    assert body["spend"]["day"]["key"][0]["key"] == "app"
    assert body["spend"]["month"]["provider"][0]["provider"] == "offline"
    budget = body["budgets"][0]
    assert budget["who"] == "key app" and budget["state"] == "down"  # past its last threshold
    assert budget["reason"] == "past 50%" and budget["thresholds"] == [0.1, 0.5]
    slo = body["slos"][0]
    assert slo["state"] == "ok" and slo["samples"] == 3
    assert [a["event"] for a in body["alerts"]] == ["budget_threshold", "budget_threshold"]
    assert len(body["charts"]["rps"]) == 360 and body["charts"]["step_s"] == 10
    raw = orjson.dumps(body)
    assert ADMIN.encode() not in raw and CLIENT.encode() not in raw


async def test_views_cost_a_dictionary_read(start_gateway):
    gw = await start_gateway(config())
    watch = gw.app[GATEWAY].watch
    built = []
    original = watch.build
    watch.build = lambda now: (built.append(now), original(now))[1]
    async with jar() as http:
        await login(http, gw.url)
        began = time.perf_counter()
        bodies = [await state(http, gw.url) for _ in range(50)]
        took = time.perf_counter() - began
    assert len(built) <= 3  # once when the page opened, then only by the 1 s tick
    assert len({b["generated_at"] for b in bodies}) == len(built)
    assert took < 2.0


async def test_charts_add_up_every_instance_through_redis(start_gateway):
    require("127.0.0.1", 6379, "Redis")
    prefix = f"gwchart{uuid.uuid4().hex[:8]}:"
    extra = f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}"
    a, b = await start_gateway(config(extra, 100)), await start_gateway(config(extra, 100))
    watches = [gw.app[GATEWAY].watch for gw in (a, b)]
    for w in watches:
        w._loop.cancel()  # this test moves the clock by hand
        w._watched_until = float("inf")
    await chats(a.url, 3)
    await chats(b.url, 5)
    t0 = time.time()
    t0 -= t0 % 10
    for when in (t0 + 1, t0 + 10.5):  # the second tick closes the cell: each pushes it
        for w in watches:
            w.tick(when)
        await asyncio.sleep(0.3)
    watches[0].tick(t0 + 20.5)  # a's next cell: pulls the last three again
    await asyncio.sleep(0.3)
    watches[0].build(t0 + 20.5)
    charts = orjson.loads(watches[0].body)["charts"]
    i = int((t0 - charts["start"]) // 10)
    assert charts["rps"][i] == 0.8  # (3 + 5) requests in 10 s, from both instances
    assert charts["p95_ms"][i] is not None
    redis = a.app[GATEWAY].shared.redis
    keys = await redis.client.keys(prefix + "*")
    await redis.client.delete(*keys)


async def test_the_charts_keep_one_hour_only(start_gateway):
    gw = await start_gateway(config())
    watch = gw.app[GATEWAY].watch
    watch._loop.cancel()
    t0 = time.time()
    t0 -= t0 % 10
    for k in range(800):  # 8,000 s of cells
        await chats(gw.url, 1) if k % 200 == 0 else None
        watch.tick(t0 + 10 * k + 1)
    assert len(watch._points) <= 361
    assert min(watch._points) >= t0 + 10 * 799 - 3600
