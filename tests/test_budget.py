"""Budgets: atomic reservations, periods, thresholds, degrade, provider budgets, cost."""

from __future__ import annotations

import asyncio
import calendar
import sqlite3
import textwrap

import aiohttp
import pytest
from aiohttp import web

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from proxy.server.gateway import GATEWAY
from tests.fakes.server import LoopbackServer

KEY = "sk-gw-budget-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
# $1000 per million tokens either way: a token costs $0.001
PRICE = "price: {input: 1000, output: 1000}"
# "hi there" on the mock: 9 prompt + 3 completion tokens = $0.012
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
REAL_COST = 0.012
RESERVE_5 = 0.014  # 9 prompt (estimated) + 5 max output


class Clock:
    def __init__(self, when: float) -> None:
        self.now = when

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def serve():
    servers: list[LoopbackServer] = []

    async def start(text: str, clock: Clock | None = None) -> LoopbackServer:
        config = parse_config(textwrap.dedent(text), {})
        server = LoopbackServer(build_app(config, now=clock), handler_cancellation=True)
        servers.append(server)
        return await server.start()

    yield start
    for server in reversed(servers):
        await server.close()


def config(budget: str, latency_ms: int = 0, extra: str = "", ledger: str = "none") -> str:
    return f"""
providers:
  offline: {{type: mock, latency_ms: {latency_ms}}}
models:
  echo: {{targets: [{{provider: offline, model: echo, {PRICE}}}]}}
keys:
  - {{name: app, key: {KEY}, budget: {budget}}}
state: {{ledger: "{ledger}"}}
{extra}"""


async def post(http, url, json=CHAT, headers=AUTH):
    async with http.post(f"{url}/v1/chat/completions", json=json, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_fifty_concurrent_admit_at_most_what_the_budget_fits(serve):
    # each request may cost up to 9 + 1000 tokens = $1.009; $10.5 fits ten of them
    gw = await serve(config("{usd: 10.5, per: day}", latency_ms=300))
    big = {**CHAT, "max_tokens": 1000}
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(post(http, gw.url, json=big) for _ in range(50)))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    _, body, headers = next(r for r in results if r[0] == 429)
    assert body["error"]["type"] == "insufficient_quota"
    assert body["error"]["code"] == "budget_exceeded"
    assert headers["x-should-retry"] == "false"
    budget = gw.app[GATEWAY].budget
    spent, held = next(budget.store.used(s) for s in budget.store._spent)
    assert held == 0 and spent == pytest.approx(10 * REAL_COST)


async def test_cost_header_and_ledger_row(serve, tmp_path):
    db = tmp_path / "ledger.db"
    gw = await serve(config("{usd: 5, per: day}", ledger=f"sqlite:{db}"))
    async with aiohttp.ClientSession() as http:
        status, _, headers = await post(http, gw.url, headers={**AUTH, "x-request-id": "r-1"})
    assert status == 200
    assert headers["x-gatewise-cost"] == f"{REAL_COST:.8f}"
    await gw.app[GATEWAY].budget.ledger.flush()
    row = sqlite3.connect(db).execute(
        "SELECT request_id, key_name, model, provider, target, state, http_status, "
        "prompt_tokens, completion_tokens, cost, reserved, estimated FROM spend").fetchall()
    assert row == [("r-1", "app", "echo", "offline", "offline/echo", "done", 200, 9, 3,
                    pytest.approx(REAL_COST), pytest.approx(RESERVE_5), 0)]


async def test_period_rolls_over_at_utc_midnight(serve):
    clock = Clock(calendar.timegm((2026, 3, 14, 23, 59, 0)))
    gw = await serve(config("{usd: 0.02, per: day}"), clock)
    async with aiohttp.ClientSession() as http:
        assert (await post(http, gw.url))[0] == 200  # $0.012 spent
        status, body, _ = await post(http, gw.url)  # 0.012 + 0.014 > 0.02
        assert status == 429 and body["error"]["code"] == "budget_exceeded"
        clock.now += 59.5  # still the 14th
        assert (await post(http, gw.url))[0] == 429
        clock.now += 1  # 00:00:00.5 on the 15th: a fresh day
        assert (await post(http, gw.url))[0] == 200


async def test_monthly_budget_spans_days(serve):
    clock = Clock(calendar.timegm((2026, 1, 31, 12, 0, 0)))
    gw = await serve(config("{usd: 0.02, per: month}"), clock)
    async with aiohttp.ClientSession() as http:
        assert (await post(http, gw.url))[0] == 200
        clock.now -= 86400  # the 30th: same month
        assert (await post(http, gw.url))[0] == 429
        clock.now = calendar.timegm((2026, 2, 1, 0, 0, 0))
        assert (await post(http, gw.url))[0] == 200


async def test_thresholds_alert_once_each_and_post_webhook(serve):
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with LoopbackServer(app) as sink:
        clock = Clock(calendar.timegm((2026, 5, 1, 8, 0, 0)))
        gw = await serve(config("{usd: 0.05, per: day}", extra=f"""
policies: {{budgets: {{alert_webhook: "{sink.url}/hook"}}}}"""), clock)
        budget = gw.app[GATEWAY].budget
        async with aiohttp.ClientSession() as http:
            for expected in ([], [], [0.5], [0.5, 0.8, 0.95]):  # 24%, 48%, 72%, 96%
                assert (await post(http, gw.url))[0] == 200
                assert [a["threshold"] for a in budget.alerts] == expected
            assert (await post(http, gw.url))[0] == 429
            assert len(budget.alerts) == 3  # no repeats
            clock.now += 86400  # a new day alerts afresh
            for _ in range(3):
                await post(http, gw.url)
            assert [a["threshold"] for a in budget.alerts] == [0.5, 0.8, 0.95, 0.5]
        await asyncio.sleep(0.05)
        for _ in range(50):
            if len(received) == 4:
                break
            await asyncio.sleep(0.02)
    assert [r["threshold"] for r in received] == [0.5, 0.8, 0.95, 0.5]
    assert received[0]["event"] == "budget_threshold" and received[0]["scope"].startswith("key:app")


DEGRADE = f"""
providers:
  offline: {{type: mock}}
models:
  smart:
    targets:
      - {{provider: offline, model: pricey, {PRICE}}}
      - {{provider: offline, model: cheap, price: {{input: 100, output: 100}}}}
keys:
  - {{name: app, key: {KEY}, budget: {{usd: 0.1, per: day, degrade_at: 20%, local_only_at: 30%}}}}
state: {{ledger: none}}
"""


async def test_degrade_then_local_only_routing(serve):
    gw = await serve(DEGRADE)
    chat = {**CHAT, "model": "smart"}
    targets = []
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            status, _, headers = await post(http, gw.url, json=chat)
            assert status == 200
            targets.append(headers["x-gatewise-target"])
    # $0.012 each at full price: 12%, 24% → cheaper from the 3rd; 30% is never reached
    # at the cheap price ($0.0012), so the cheap target keeps serving
    assert targets[:2] == ["offline/pricey", "offline/pricey"]
    assert targets[2:] == ["offline/cheap"] * 3


async def test_local_only_uses_free_targets_and_reserves_nothing(serve):
    gw = await serve(DEGRADE.replace("degrade_at: 20%, ", "").replace(
        "model: cheap, price: {input: 100, output: 100}", "model: free, price: {input: 0, output: 0}"))
    chat = {**CHAT, "model": "smart"}
    targets = []
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            status, _, headers = await post(http, gw.url, json=chat)
            assert status == 200
            targets.append(headers["x-gatewise-target"])
    # 12%, 24%, 36%: from then on only free targets serve
    assert targets == ["offline/pricey"] * 3 + ["offline/free"] * 2


PROVIDERS = f"""
providers:
  paid: {{type: mock}}
  other: {{type: mock}}
models:
  echo:
    targets:
      - {{provider: paid, model: echo, {PRICE}}}
      - {{provider: other, model: echo, {PRICE}}}
  only-paid: {{targets: [{{provider: paid, model: echo, {PRICE}}}]}}
policies:
  budgets:
    providers: {{paid: {{usd: 0.02, per: month}}}}
    global: {{usd: 1, per: total}}
state: {{ledger: none}}
"""


async def test_provider_budget_skips_its_targets(serve):
    gw = await serve(PROVIDERS)
    async with aiohttp.ClientSession() as http:
        _, _, first = await post(http, gw.url, headers={})
        _, _, second = await post(http, gw.url, headers={})
        assert first["x-gatewise-target"] == "paid/echo"
        assert second["x-gatewise-target"] == "other/echo"  # paid's budget has no room
        status, body, headers = await post(http, gw.url, json={**CHAT, "model": "only-paid"},
                                           headers={})
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert body["error"]["type"] == "insufficient_quota" and headers["x-should-retry"] == "false"
    assert "provider 'paid'" in body["error"]["message"]
    store = gw.app[GATEWAY].budget.store
    assert store.used("global:total") == (pytest.approx(2 * REAL_COST), 0.0)


async def test_failed_request_releases_its_reservation(serve):
    gw = await serve(config("{usd: 0.02, per: day}"))
    async with aiohttp.ClientSession() as http:
        status, _, _ = await post(http, gw.url, json={**CHAT, "model": "nope"})
        assert status == 404
        assert (await post(http, gw.url))[0] == 200
    store = gw.app[GATEWAY].budget.store
    assert list(store._held.values()) == [] and sum(store._spent.values()) == pytest.approx(REAL_COST)


def test_budget_config_problems_name_their_path():
    from proxy.config.load import ConfigError
    text = """
providers: {offline: {type: mock}}
models: {echo: {targets: [{provider: offline, model: echo}]}}
keys:
  - {name: a, key: sk-long-enough-key-0001, budget: {usd: 1, per: week, degrade_at: 180%}}
policies:
  budgets:
    global: {per: day, thresholds: [50%, "x"]}
    providers: {nowhere: {usd: 3}}
    alert_webhook: ftp://x
state: {backend: redis, ledger: "postgres://x"}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = info.value.problems
    assert "keys[0].budget.per: must be one of day, month, total; got 'week'" in problems
    assert any(p.startswith("keys[0].budget.degrade_at: must be a percentage") for p in problems)
    assert "policies.budgets.global.usd: is required" in problems
    assert any(p.startswith("policies.budgets.global.thresholds[1]: must be a percentage")
               for p in problems)
    assert "policies.budgets.providers.nowhere: unknown provider 'nowhere'" in problems
    assert "policies.budgets.alert_webhook: must be an http:// or https:// URL" in problems
    assert "state.url: is required when state.backend is redis (redis://HOST:6379/0)" in problems
    assert not any(p.startswith("state.ledger") for p in problems)  # postgres:// is a ledger
    ok = parse_config(text.split("keys:")[0] + """
policies: {budgets: {global: {usd: 2, per: month, thresholds: [25%, 90], local_only_at: 99%}}}
state: {ledger: "sqlite:///var/lib/gw.db"}
""", {})
    assert ok.budgets.global_.thresholds == (0.25, 0.9) and ok.budgets.global_.local_only_at == 0.99
    assert ok.state.ledger == "/var/lib/gw.db"
