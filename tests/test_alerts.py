"""Alerts end to end with a fake webhook receiver: an SLO breach is told once
until it recovers, the HMAC verifies, no secret is ever in a payload, redirects
are not followed, a hanging or failing receiver and a storm of events cost the
gateway nothing."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from proxy.config.observe import AlertsConfig, AlertSink
from proxy.engine.health import CheckResult
from proxy.server.alerts import AlertHub
from proxy.server.gateway import GATEWAY
from proxy.server.webhook import WebhookSender
from proxy.state.ledger_watch import WatchedLedger
from tests.fakes.faults import start_faulty_openai
from tests.fakes.openai_upstream import API_KEY
from tests.fakes.receiver import Receiver
from tests.fakes.server import LoopbackServer

SECRET = "whsec-0123456789abcdef-signing"
ADMIN = "admin-key-alerts-0123456789"
CLIENT = "sk-gw-alerts-0123456789abcdef"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def receiver():
    rx = Receiver()
    async with LoopbackServer(rx.app) as server:
        rx.url = f"{server.url}/hook"
        yield rx
        rx.release.set()


@pytest.fixture
async def upstream():
    servers: list = []
    fake, faults, server = await start_faulty_openai(servers)
    yield faults, server
    for s in servers:
        await s.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def config(upstream_url: str, hook: str, extra: str = "", cooldown: str = "10m",
           policies: str = "{breaker: {failures: 1000}}") -> str:
    return f"""
providers:
  fake: {{type: openai, base_url: '{upstream_url}/v1', api_key: {API_KEY}}}
models:
  chat:
    slo: {{availability: 50%, window: 1m, min_requests: 4}}
    targets: [{{provider: fake, model: gpt-4o-mini}}]
keys: [{{name: app, key: {CLIENT}}}]
admin: {{key: {ADMIN}}}
policies: {policies}
alerts: {{webhook: "{hook}", secret: "{SECRET}", cooldown: {cooldown}}}
{extra}"""


async def chats(gw, n: int) -> list[int]:
    async with aiohttp.ClientSession() as http:
        out = []
        for _ in range(n):
            async with http.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                                 headers={"authorization": f"Bearer {CLIENT}"}) as resp:
                await resp.read()
                out.append(resp.status)
        return out


def no_secret_in(body: bytes) -> None:
    for secret in (API_KEY, ADMIN, CLIENT, SECRET):
        assert secret.encode() not in body


async def test_a_breach_is_told_once_until_it_recovers(receiver, upstream, start_gateway):
    faults, up = upstream
    gw = await start_gateway(config(up.url, receiver.url, cooldown="0s"))
    watch = gw.app[GATEWAY].watch
    faults.fail(None, 500)
    assert await chats(gw, 6) == [500] * 6
    watch.tick()
    await receiver.wait(1)
    assert await chats(gw, 20) == [500] * 20  # still breached: nothing new to tell
    for _ in range(3):
        watch.tick()
    await asyncio.sleep(0.2)
    assert [d.json["event"] for d in receiver.deliveries] == ["slo_breach"]
    breach = receiver.deliveries[0]
    assert breach.verifies(SECRET) and not breach.verifies(SECRET + "x")
    assert breach.headers["content-type"] == "application/json"
    event = breach.json
    assert event["subject"] == "model:chat:availability:1m" and event["severity"] == "critical"
    assert event["value"] == 0.0 and event["burn_rate"] == 2.0 and event["samples"] >= 4
    no_secret_in(breach.body)

    faults.clear()
    assert await chats(gw, 26) == [200] * 26  # 26 good of 52: 50 % meets the objective
    watch.tick()
    await receiver.wait(2)
    assert [d.json["event"] for d in receiver.deliveries] == ["slo_breach", "slo_recovered"]
    assert receiver.deliveries[1].verifies(SECRET)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/metrics") as resp:
            metrics = await resp.text()
    assert 'gatewise_slo_ok{slo="model:chat:availability:1m",scope="model",subject="chat",' \
           'objective="availability",window="1m"} 1.0' in metrics
    assert "gatewise_slo_burn_rate{" in metrics


async def test_the_cool_down_holds_a_flapping_breach_back(receiver, upstream, start_gateway):
    faults, up = upstream
    gw = await start_gateway(config(up.url, receiver.url))  # 10 minutes
    watch, hub = gw.app[GATEWAY].watch, gw.app[GATEWAY].alerts
    faults.fail(None, 500)
    await chats(gw, 4)
    watch.tick()  # breach
    faults.clear()
    await chats(gw, 4)
    watch.tick()  # recovered
    faults.fail(None, 500)
    await chats(gw, 10)
    watch.tick()  # breached again, within the cool-down: held back and counted
    await receiver.wait(2)
    await asyncio.sleep(0.1)
    assert [d.json["event"] for d in receiver.deliveries] == ["slo_breach", "slo_recovered"]
    assert hub.suppressed == 1 and hub.emitted == 2
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/metrics") as resp:
            assert 'window="1m"} 0.0' in await resp.text()  # gatewise_slo_ok says breached


async def test_a_refused_credential_alerts_and_the_payload_holds_no_secret(
        receiver, upstream, start_gateway):
    faults, up = upstream
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY}.",
                      "type": "invalid_request_error", "param": None,
                      "code": "invalid_api_key"}}
    faults.fail(3, 401, body=body)  # the upstream echoes the key, as OpenAI does (masked)
    gw = await start_gateway(config(up.url, receiver.url))
    assert await chats(gw, 3) == [502] * 3
    await receiver.wait(1)
    await asyncio.sleep(0.1)
    assert len(receiver.deliveries) == 1  # one per provider per cool-down
    got = receiver.deliveries[0]
    assert got.json["event"] == "upstream_auth" and got.json["provider"] == "fake"
    assert got.json["status"] == 401 and got.verifies(SECRET)
    no_secret_in(got.body)
    async with aiohttp.ClientSession() as http:
        url = f"{gw.url}/admin/alerts"
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"authorization": f"Bearer {CLIENT}"}) as resp:
            assert resp.status == 403
        async with http.get(url, headers={"authorization": f"Bearer {ADMIN}"}) as resp:
            listing = await resp.json()
            raw = await resp.read()
    no_secret_in(raw)
    assert "/hook" not in raw.decode()  # a webhook's path may be its token: host only
    assert listing["data"][0]["event"] == "upstream_auth"
    assert listing["data"][0]["deliveries"][0]["state"] == "delivered"
    assert listing["sinks"][0]["url"].startswith("http://127.0.0.1:")


async def test_breaker_health_and_budget_events(receiver, upstream, start_gateway):
    faults, up = upstream
    gw = await start_gateway(config(up.url, receiver.url, policies="{breaker: {failures: 2, "
                                    "reset_after: 200ms}, budgets: {global: {usd: 1, thresholds: [0.0001%]}}}"))
    gateway = gw.app[GATEWAY]
    faults.fail(2, 500)
    await chats(gw, 2)
    gateway.watch.tick()
    await asyncio.sleep(0.25)
    await chats(gw, 1)  # the probe succeeds: closed
    gateway.watch.tick()
    gateway.health.checks = {"fake": None}  # as if a health check were configured
    gateway.health.results["fake"] = CheckResult(False, time.monotonic(), "HTTP 503")
    gateway.watch.tick()
    gateway.health.results["fake"] = CheckResult(True, time.monotonic(), "HTTP 200")
    gateway.watch.tick()
    await receiver.wait(5)
    kinds = [d.json["event"] for d in receiver.deliveries]
    assert {"breaker_open", "breaker_closed", "health_down", "health_up",
            "budget_threshold"} <= set(kinds)
    assert kinds.index("breaker_open") < kinds.index("breaker_closed")
    budget = receiver.of("budget_threshold")[0].json
    assert budget["scope"].startswith("global:") and budget["threshold"] == 0.000001


async def test_a_redirecting_receiver_is_not_followed(receiver, http):
    receiver.redirect = True
    sender = WebhookSender(AlertSink(url=receiver.url, secret=SECRET), lambda: http, backoff=0)
    status: dict = {}
    assert await sender.deliver({"event": "slo_breach", "id": "x"}, status) is False
    assert receiver.moved == 0 and len(receiver.deliveries) == 1  # one try, not retried
    assert status == {"attempts": 1, "detail": "HTTP 302: redirect not followed",
                      "state": "failed"}


async def test_a_failing_receiver_is_retried_with_the_same_signed_body(receiver, http):
    receiver.statuses = [500, 503]
    sender = WebhookSender(AlertSink(url=receiver.url, secret=SECRET), lambda: http,
                           backoff=0.01)
    status: dict = {}
    assert await sender.deliver({"event": "breaker_open", "id": "alt_1"}, status)
    assert status["attempts"] == 3 and status["state"] == "delivered"
    assert len({d.body for d in receiver.deliveries}) == 1
    assert all(d.verifies(SECRET) for d in receiver.deliveries)
    receiver.deliveries.clear()
    receiver.statuses = [400]  # the receiver refuses it: not retried
    assert not await sender.deliver({"event": "breaker_open", "id": "alt_2"}, {})
    assert len(receiver.deliveries) == 1


async def test_a_hanging_receiver_times_out_and_serving_goes_on(receiver, upstream, http,
                                                                start_gateway):
    receiver.hang = 30
    sender = WebhookSender(AlertSink(url=receiver.url), lambda: http, attempts=2, timeout=0.2,
                           backoff=0.01)
    status: dict = {}
    began = time.perf_counter()
    assert not await sender.deliver({"event": "x", "id": "y"}, status)
    assert time.perf_counter() - began < 1.0
    assert status["detail"] == "no answer within 0.2s" and status["attempts"] == 2
    faults, up = upstream  # and a gateway whose receiver hangs still answers at once
    # (auth_cooldown 0s: the refused key is not cooled down, so the next requests go up)
    gw = await start_gateway(config(up.url, receiver.url, policies="{breaker: {failures: "
                                    "1000}, retry: {auth_cooldown: 0s}}"))
    faults.fail(1, 401)
    assert await chats(gw, 1) == [502]
    began = time.perf_counter()
    assert await chats(gw, 20) == [200] * 20
    assert time.perf_counter() - began < 2.0


async def test_a_storm_is_bounded(receiver, caplog):
    receiver.hang = 30  # nothing drains: the queue fills
    hub = AlertHub(AlertsConfig(sinks=(AlertSink(url=receiver.url, format="slack"),),
                                cooldown=600), [API_KEY])
    hub.senders[0].queue = asyncio.Queue(100)
    hub.start()
    began = time.perf_counter()
    with caplog.at_level(logging.ERROR, logger="gatewise.alerts"):  # 5,000 log lines otherwise
        for i in range(20_000):
            hub.emit("breaker_open", f"p{i % 5000}/m", f"open with {API_KEY}")
    took = time.perf_counter() - began
    assert took < 1.5, took  # ~0.2 s: suppressed events cost a dict lookup
    stats = hub.stats()
    assert stats["emitted"] == 5000 and stats["suppressed"] == 15_000
    assert stats["dropped"] == 5000 - 100  # 100 queued (the worker has not run yet)
    assert len(hub.recent) == 200  # the listing keeps the newest only
    assert API_KEY not in str(hub.listing())
    await receiver.wait(1)
    assert receiver.deliveries[0].json["text"].startswith(":red_circle: *gatewise: breaker open*")
    for sender in hub.senders:
        sender._task.cancel()
    await hub.stop()


async def test_a_ledger_that_cannot_write_alerts():
    told: list[BaseException] = []

    class Broken:
        async def begin(self, row):
            raise OSError("disk full")

        def finish(self, row_id, outcome):
            future = asyncio.get_running_loop().create_future()
            future.set_exception(OSError("disk full"))
            return future

        path = ":memory:"

    ledger = WatchedLedger(Broken(), told.append)
    with pytest.raises(OSError):
        await ledger.begin(object())
    future = ledger.finish("id", object())
    assert future.exception() is not None and len(told) == 2 and ledger.path == ":memory:"
    hub = AlertHub(AlertsConfig(), [])
    hub.ledger_failed(told[0])
    assert hub.listing()[0]["event"] == "ledger_error"
    assert hub.listing()[0]["message"].endswith("OSError")
