"""Quality routing by task kind, token-aware balancing, SLOs, and the admin-only explanation."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from proxy.engine.routing import View, least_tokens
from proxy.config.types import TargetConfig
from proxy.server.gateway import GATEWAY
from proxy.state.route_stats import TokenLoad
from proxy.state.target_stats import MemoryStatsStore

ADMIN = "admin-key-0123456789abcdef"
CLIENT = "client-key-0123456789abcdef"
ENV = {"ADMIN": ADMIN, "CLIENT": CLIENT}
PRICES = {"strong": (10, 30), "artist": (3, 15), "cheap": (0.1, 0.4)}
QUALITY = {"strong": {"coding": 0.95, "creative": 0.55},
           "artist": {"coding": 0.5, "creative": 0.9},
           "cheap": {"coding": 0.4, "creative": 0.4, "default": 0.3}}


def targets_yaml() -> str:
    return "\n".join(
        f"      - {{provider: {name}, model: echo, price: {{input: {i}, output: {o}}}, "
        f"quality: {json.dumps(QUALITY[name])}{', tier: premium' if name == 'strong' else ''}}}"
        for name, (i, o) in PRICES.items())


CONFIG = f"""
admin: {{key: "${{ADMIN}}"}}
providers: {{strong: {{type: mock}}, artist: {{type: mock}}, cheap: {{type: mock}}}}
models:
  smart:
    strategy: {{name: adaptive, weights: {{success: 0, latency: 0, cost: 1, health: 0,
                                          quality: 4}}}}
    targets:
{targets_yaml()}
  thrifty:
    strategy: {{name: adaptive, weights: {{success: 0, latency: 0, cost: 1, health: 0,
                                          quality: 0}}}}
    targets:
{targets_yaml()}
keys:
  - {{name: client, key: "${{CLIENT}}"}}
"""


def expected(task: str | None, quality_weight: float) -> dict[str, float]:
    """The composite, computed here from the config alone: quality x its weight + thrift."""
    price = {n: (i + o) / 2 for n, (i, o) in PRICES.items()}
    dearest = max(price.values())
    out = {}
    for name in PRICES:
        scores = QUALITY[name]
        q = scores.get(task, scores.get("default", 0.0)) if task else scores.get("default", 0.0)
        out[f"{name}/echo"] = quality_weight * q + (1 - price[name] / dearest)
    return out


async def ask(gw, model: str, key: str, task: str | None = None, explain: bool = True):
    headers = {"authorization": f"Bearer {key}"}
    if task:
        headers["x-gatewise-task"] = task
    if explain:
        headers["x-gatewise-explain"] = "1"
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", headers=headers, json={
                "model": model, "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200, await resp.text()
            return resp.headers


@pytest.mark.parametrize("task,winner", [("coding", "strong/echo"), ("creative", "artist/echo"),
                                         (None, "cheap/echo")])
async def test_task_kinds_land_where_the_weights_say_with_the_numbers(start_gateway, task,
                                                                      winner):
    gw = await start_gateway(CONFIG, env=ENV)
    headers = await ask(gw, "smart", ADMIN, task)
    assert headers["x-gatewise-target"] == winner
    assert headers["x-gatewise-route"] == "strategy=adaptive"
    explain = json.loads(headers["x-gatewise-explain"])
    assert explain["task"] == task and explain["rule"] is None
    [model] = explain["models"]
    assert model["model"] == "smart" and model["strategy"] == "adaptive"
    assert model["weights"] == {"success": 0, "latency": 0, "cost": 1, "health": 0,
                                "quality": 4}
    want = expected(task, 4)
    got = {c["target"]: c for c in model["candidates"]}
    assert [c["target"] for c in model["candidates"]] == sorted(want, key=lambda t: -want[t])
    for label, score in want.items():
        assert got[label]["score"] == pytest.approx(score, abs=1e-6)
        assert got[label]["quality"] == pytest.approx(
            QUALITY[label.split("/")[0]].get(task or "default",
                                             QUALITY[label.split("/")[0]].get("default", 0)))
    assert got["strong/echo"]["tier"] == "premium"
    assert explain["attempts"] == [{"target": winner, "error": None}]


async def test_without_a_quality_weight_the_cheapest_wins_every_task(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    for task in ("coding", "creative"):
        headers = await ask(gw, "thrifty", ADMIN, task)
        assert headers["x-gatewise-target"] == "cheap/echo"
        scores = {c["target"]: c["score"] for c in
                  json.loads(headers["x-gatewise-explain"])["models"][0]["candidates"]}
        assert scores == pytest.approx(expected(task, 0))


async def test_client_keys_never_get_the_explanation(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    headers = await ask(gw, "smart", CLIENT, "coding")
    assert headers["x-gatewise-target"] == "strong/echo"
    assert "x-gatewise-explain" not in headers
    assert headers["x-gatewise-route"] == "strategy=adaptive"
    for value in ("true", "yes", "1 ", "2"):  # and the admin only gets it for exactly "1"
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/v1/chat/completions", headers={
                    "authorization": f"Bearer {ADMIN}", "x-gatewise-explain": value}, json={
                    "model": "smart", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200
                assert ("x-gatewise-explain" in r.headers) == (value.strip() == "1")


async def test_without_client_keys_only_the_admin_key_gets_it(start_gateway):
    gw = await start_gateway(CONFIG.replace("keys:\n  - {name: client, key: \"${CLIENT}\"}\n",
                                            ""), env=ENV)
    assert "x-gatewise-explain" not in await ask(gw, "smart", "not-the-admin-key-at-all")
    assert "x-gatewise-explain" not in await ask(gw, "smart", ADMIN[:-1] + "X")
    assert "x-gatewise-explain" in await ask(gw, "smart", ADMIN)


async def test_adaptive_learns_per_task_kind(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    tasks = gw.app[GATEWAY].dispatcher.router.view.tasks
    for _ in range(3):
        await ask(gw, "smart", CLIENT, "coding", explain=False)
    await ask(gw, "smart", CLIENT, "creative", explain=False)
    assert tasks.of("coding")["strong/echo"].requests == 3
    assert tasks.of("creative")["artist/echo"].requests == 1
    assert "strong/echo" not in tasks.of("creative")
    # a failure learned for coding only: coding moves away, creative does not care
    for _ in range(30):
        tasks.learn("coding", "strong/echo", False, None)
    learned = CONFIG.replace("success: 0, latency: 0, cost: 1, health: 0,\n"
                             "                                          quality: 4",
                             "success: 5, latency: 0, cost: 1, health: 0,\n"
                             "                                          quality: 4")
    gw2 = await start_gateway(learned, env=ENV)
    gw2.app[GATEWAY].dispatcher.router.view.tasks = tasks
    assert (await ask(gw2, "smart", CLIENT, "coding", explain=False))["x-gatewise-target"] != \
        "strong/echo"
    assert (await ask(gw2, "smart", CLIENT, "creative", explain=False))["x-gatewise-target"] == \
        "artist/echo"


# --- skips, demotions and SLOs in the explanation ---------------------------------------

SKIPS = """
admin: {key: "${ADMIN}"}
providers: {t-cap: {type: mock}, t-open: {type: mock}, t-rate: {type: mock},
            t-sick: {type: mock}, t-ok: {type: mock}}
models:
  mixed:
    targets:
      - {provider: t-cap, model: echo, capabilities: []}
      - {provider: t-open, model: echo}
      - {provider: t-rate, model: echo, rpm: 1}
      - {provider: t-sick, model: echo}
      - {provider: t-ok, model: echo}
"""
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


async def post(gw, body, key=ADMIN, explain=True):
    headers = {"authorization": f"Bearer {key}"}
    if explain:
        headers["x-gatewise-explain"] = "1"
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", headers=headers,
                             json=body) as resp:
            return resp.status, resp.headers, await resp.json()


async def test_every_skip_and_demotion_says_why(start_gateway):
    gw = await start_gateway(SKIPS, env=ENV)
    dispatcher = gw.app[GATEWAY].dispatcher
    body = {"model": "mixed", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    status, headers, _ = await post(gw, body)  # t-rate serves once and uses its rpm
    assert headers["x-gatewise-target"] == "t-open/echo"  # t-cap lacks tools
    dispatcher.breakers.get("t-open/echo").cb.open()
    dispatcher.provider_health = lambda name: False if name == "t-sick" else None
    await post(gw, body, explain=False)  # t-rate takes its one request a minute
    status, headers, _ = await post(gw, body)
    assert status == 200 and headers["x-gatewise-target"] == "t-ok/echo"
    explain = json.loads(headers["x-gatewise-explain"])
    [model] = explain["models"]
    last = {c["target"]: c.get("last") for c in model["candidates"]}
    assert last == {"t-rate/echo": None, "t-ok/echo": None, "t-open/echo": "breaker_open",
                    "t-sick/echo": "health"}
    assert [c["target"] for c in model["candidates"]][:2] == ["t-rate/echo", "t-ok/echo"]
    assert {"target": "t-cap/echo", "reason": "capability", "detail": "tools"} in \
        explain["skipped"]
    assert any(s["target"] == "t-rate/echo" and s["reason"] == "rate_limit" and s["detail"] > 0
               for s in explain["skipped"])


async def test_all_targets_open_explains_the_503(start_gateway):
    gw = await start_gateway(SKIPS, env=ENV)
    dispatcher = gw.app[GATEWAY].dispatcher
    for target in gw.app[GATEWAY].config.models["mixed"].targets:
        dispatcher.breakers.get(target.label).cb.open()
    status, headers, body = await post(gw, {"model": "mixed", "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 503 and body["error"]["code"] == "circuit_open"
    assert headers["x-gatewise-route"] == "strategy=priority"
    explain = json.loads(headers["x-gatewise-explain"])
    assert sorted(s["target"] for s in explain["skipped"] if s["reason"] == "breaker_open") == \
        sorted(t.label for t in gw.app[GATEWAY].config.models["mixed"].targets)
    assert explain["attempts"] == []
    status, headers, _ = await post(gw, {"model": "mixed", "messages": [
        {"role": "user", "content": "hi"}]}, explain=False)
    assert status == 503 and "x-gatewise-explain" not in headers
    assert headers["x-gatewise-route"] == "strategy=priority"


async def test_a_breached_adaptive_slo_halves_the_score_and_says_so(start_gateway):
    gw = await start_gateway(CONFIG.replace(
        "quality: {\"coding\": 0.95, \"creative\": 0.55}, tier: premium}",
        "quality: {\"coding\": 0.95, \"creative\": 0.55}, tier: premium,\n"
        "         slo: {availability: 99%, adaptive: true}}"), env=ENV)
    view = gw.app[GATEWAY].dispatcher.router.view
    assert any(slo.adaptive and slo.subject == "strong/echo" for slo in
               gw.app[GATEWAY].config.slos)
    assert (await ask(gw, "smart", ADMIN, "coding"))["x-gatewise-target"] == "strong/echo"
    view.penalty = lambda label: 0.5 if label == "strong/echo" else 1.0  # as a breach sets it
    headers = await ask(gw, "smart", ADMIN, "coding")
    want = expected("coding", 4)
    want["strong/echo"] *= 0.5
    assert headers["x-gatewise-target"] == max(want, key=want.get) != "strong/echo"
    got = {c["target"]: c for c in
           json.loads(headers["x-gatewise-explain"])["models"][0]["candidates"]}
    assert got["strong/echo"]["slo_penalty"] == 0.5
    assert got["strong/echo"]["score"] == pytest.approx(want["strong/echo"], abs=1e-6)
    assert "slo_penalty" not in got["artist/echo"]


# --- least_tokens ------------------------------------------------------------------------

def test_least_tokens_orders_by_tokens_in_flight():
    a, b, c = (TargetConfig(provider=p, model="m") for p in "abc")
    tokens = TokenLoad()
    view = View(MemoryStatsStore(), tokens=tokens)
    assert least_tokens([a, b, c], view) == [a, b, c]
    tokens.add(a.label, 9000)
    tokens.add(b.label, 30)
    tokens.remote[c.label] = 100  # another instance's
    assert least_tokens([a, b, c], view) == [b, c, a]
    tokens.done(a.label, 9000)
    tokens.done(a.label, 5)  # never below zero
    assert tokens.get(a.label) == 0


async def test_least_tokens_sends_small_requests_past_a_big_one(start_gateway):
    gw = await start_gateway("""
admin: {key: "admin-key-0123456789"}
providers: {a: {type: mock, latency_ms: 400}, b: {type: mock, latency_ms: 400}}
models:
  m:
    strategy: least_tokens
    targets: [{provider: a, model: echo}, {provider: b, model: echo}]
""")

    async def send(words: int) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/v1/chat/completions", json={
                    "model": "m", "max_tokens": 10,
                    "messages": [{"role": "user", "content": "word " * words}]}) as resp:
                assert resp.status == 200
                assert resp.headers["x-gatewise-route"] == "strategy=least_tokens"
                return resp.headers["x-gatewise-target"]

    big = asyncio.create_task(send(8000))
    await asyncio.sleep(0.1)
    small = [asyncio.create_task(send(5)) for _ in range(3)]
    await asyncio.sleep(0.05)
    tokens = gw.app[GATEWAY].dispatcher.tokens
    assert tokens.get("a/echo") > 8000 and 0 < tokens.get("b/echo") < 100
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/admin/targets", headers={
                "authorization": "Bearer admin-key-0123456789"}) as resp:
            rows = {r["target"]: r for r in (await resp.json())["data"]}
    assert rows["a/echo"]["tokens_in_flight"] == tokens.get("a/echo")
    assert await big == "a/echo"
    assert [await s for s in small] == ["b/echo"] * 3  # least_busy would have sent one to a
    assert tokens.get("a/echo") == tokens.get("b/echo") == 0
