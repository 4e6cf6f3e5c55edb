"""What a reload carries over, against real HTTP upstreams (the faithful fake OpenAI):
connections, breakers and statistics of what did not change; rate-limit windows,
budgets and the ledger; the cache of unchanged models. And what it does not:
a changed provider starts afresh, with the secret re-read from its file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from proxy.server.app import build_app
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {ADMIN}"}
CLIENT = "client-key-0123456789abcdef"
K1, K2 = "sk-upstream-one-0123456789", "sk-upstream-two-0123456789"


class Upstream(FakeOpenAI):
    """The fake OpenAI, counting the TCP connections it was sent requests on."""

    def __init__(self, key: str = K1) -> None:
        super().__init__(api_key=key)
        self.peers: set[tuple] = set()

        @__import__("aiohttp").web.middleware
        async def count(request, handler):
            self.peers.add(request.transport.get_extra_info("peername"))
            return await handler(request)
        self.app.middlewares.append(count)


@pytest.fixture
async def upstreams():
    one, two = Upstream(), Upstream()
    async with LoopbackServer(one.app) as s1, LoopbackServer(two.app) as s2:
        one.url, two.url = s1.url, s2.url
        yield one, two


def config(tmp: Path, one: Upstream, two: Upstream, *, model_b: str = "gpt-4o",
           rpm: int = 5, extra: str = "") -> str:
    return f"""
admin: {{key: "{ADMIN}"}}
state: {{ledger: "sqlite:{tmp / 'ledger.db'}"}}
keys: [{{name: team, key: "{CLIENT}", rpm: {rpm}, budget: {{usd: 100}}}}]
providers:
  one: {{type: openai, base_url: "{one.url}/v1", api_key: "${{file:one.key}}"}}
  two: {{type: openai, base_url: "{two.url}/v1", api_key: "{K1}"}}
policies:
  breaker: {{failures: 2, reset_after: 60s}}
  retry: {{attempts: 0}}
  cache: {{enabled: true}}
models:
  a: {{targets: [{{provider: one, model: gpt-4o, price: {{input: 1000, output: 1000}}}}]}}
  b: {{targets: [{{provider: two, model: {model_b}}}]}}
{extra}
"""


@pytest.fixture
async def gateway(tmp_path, upstreams):
    one, two = upstreams
    (tmp_path / "one.key").write_text(K1 + "\n")
    path = tmp_path / "gatewise.yaml"
    path.write_text(config(tmp_path, one, two))
    server = LoopbackServer(build_app(load_config(path)), handler_cancellation=True)
    await server.start()
    server.path, server.tmp = path, tmp_path
    yield server
    await server.close()


async def chat(http, url, model, text="hi", key=CLIENT):
    async with http.post(url + "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": model, "messages": [{"role": "user", "content": text}]}) as resp:
        return resp.status, resp.headers, await resp.json()


async def reload(http, url):
    async with http.post(url + "/admin/reload", headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_what_did_not_change_keeps_its_state(gateway, upstreams):
    one, two = upstreams
    url = gateway.url
    live = gateway.app[GATEWAY]
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, url, "a", "first"))[0] == 200
        status, headers, _ = await chat(http, url, "a", "first")  # the same question
        assert headers["x-gatewise-cache"] == "HIT"
        two.script(Reply(status=500), Reply(status=500))  # opens b's breaker
        assert (await chat(http, url, "b"))[0] == 500
        assert (await chat(http, url, "b"))[0] == 500
        breakers = live.dispatcher.breakers
        assert breakers.state("one/gpt-4o") == "closed" and breakers.is_open("two/gpt-4o")
        latency = live.dispatcher.stats.get("one/gpt-4o").latency_ms
        spent = live.budget.store.used(f"key:team:{_day(live)}")[0]
        assert spent > 0
        peers = set(one.peers)
        # a change elsewhere in the file (a new model): both providers are unchanged
        gateway.path.write_text(config(gateway.tmp, one, two).replace(
            "models:\n", "models:\n  c: {targets: [{provider: two, model: gpt-4o-mini}]}\n"))
        status, body = await reload(http, url)
        assert status == 200 and body["generation"] == 2, body
        assert "providers" not in body["changes"]
        # the fifth request of the minute, then the sixth: the window survived (rpm 5)
        status, headers, _ = await chat(http, url, "a", "first")
        assert status == 200 and headers["x-gatewise-cache"] == "HIT"  # unchanged model
        status, _, body = await chat(http, url, "a", "fourth")
        assert status == 429 and body["error"]["code"] == "gateway_rate_limit"
        assert live.dispatcher.breakers.is_open("two/gpt-4o")  # still open
        assert live.dispatcher.stats.get("one/gpt-4o").latency_ms == latency
        assert live.budget.store.used(f"key:team:{_day(live)}")[0] == spent
    assert one.peers == peers  # no new connection to the unchanged provider


async def test_a_changed_provider_starts_afresh_with_its_secret_read_again(gateway, upstreams):
    one, two = upstreams
    url = gateway.url
    live = gateway.app[GATEWAY]
    async with aiohttp.ClientSession() as http:
        one.script(Reply(status=500), Reply(status=500))
        assert (await chat(http, url, "a"))[0] == 500
        assert (await chat(http, url, "a", "again"))[0] == 500
        assert live.dispatcher.breakers.is_open("one/gpt-4o")
        one.keys = {K2}  # the provider account's key is rotated...
        (gateway.tmp / "one.key").write_text(K2)  # ...and so is the mounted secret
        status, body = await reload(http, url)
        assert status == 200 and body["changes"]["providers"] == {"changed": ["one"]}
        assert K2 not in str(body) and K1 not in str(body)
        assert not live.dispatcher.breakers.is_open("one/gpt-4o")  # a new upstream
        status, headers, _ = await chat(http, url, "a", "after rotation")
        assert status == 200
    assert one.by_key.get(K2) == 1
    await live.budget.ledger.flush()  # settled rows are committed within 2 ms
    rows = sqlite3.connect(gateway.tmp / "ledger.db").execute(
        "SELECT COUNT(*) FROM spend WHERE key_name = 'team'").fetchone()[0]
    assert rows == 3  # one ledger, every request in it


async def test_a_changed_model_misses_the_cache(gateway, upstreams):
    one, two = upstreams
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, gateway.url, "b", "q"))[0] == 200
        assert (await chat(http, gateway.url, "b", "q"))[1]["x-gatewise-cache"] == "HIT"
        gateway.path.write_text(config(gateway.tmp, one, two, model_b="gpt-4.1", rpm=100))
        status, body = await reload(http, gateway.url)
        assert body["changes"]["models"] == {"changed": ["b"]}
        status, headers, _ = await chat(http, gateway.url, "b", "q")
        assert status == 200 and headers["x-gatewise-cache"] == "MISS"


async def test_a_secret_file_that_vanishes_refuses_the_reload(gateway, upstreams):
    async with aiohttp.ClientSession() as http:
        (gateway.tmp / "one.key").unlink()
        status, body = await reload(http, gateway.url)
        assert status == 422
        assert body["problems"] == [f"providers.one.api_key: cannot read secret file "
                                    f"{gateway.tmp / 'one.key'}: No such file or directory"]
        assert (await chat(http, gateway.url, "a"))[0] == 200  # the old key still serves


async def test_retired_generations_close_only_their_own_transports(gateway, upstreams):
    one, two = upstreams
    live = gateway.app[GATEWAY]
    first = live.current
    async with aiohttp.ClientSession() as http:
        (gateway.tmp / "one.key").write_text(K1 + " ")  # the same key: unchanged provider
        gateway.path.write_text(config(gateway.tmp, one, two, rpm=100).replace(
            f'api_key: "{K1}"', f'api_keys: ["{K1}"]'))  # `two` changes
        status, body = await reload(http, gateway.url)
        assert body["changes"]["providers"] == {"changed": ["two"]}
    second = live.current
    assert second.transports["one"] is first.transports["one"]
    assert second.transports["two"] is not first.transports["two"]
    for _ in range(50):
        if not live._retiring:
            break
        await asyncio.sleep(0.02)
    assert not live._retiring  # nothing was in flight: retired at once
    assert first.transports["two"].closed  # the changed provider's own pool is closed...
    assert not second.transports["one"].closed  # ...the carried one is not


def _day(live) -> str:
    from policies.budget import period_label
    return period_label("day", live.budget.now())


async def test_the_cache_follows_the_upstream_not_its_key(gateway, upstreams):
    one, two = upstreams
    one.keys.add(K2)
    two.keys.add(K2)
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, gateway.url, "a", "q"))[1]["x-gatewise-cache"] == "MISS"
        (gateway.tmp / "one.key").write_text(K2)  # a rotated key: the same upstream
        status, body = await reload(http, gateway.url)
        assert body["changes"]["providers"] == {"changed": ["one"]}
        assert (await chat(http, gateway.url, "a", "q"))[1]["x-gatewise-cache"] == "HIT"
        # the same target label, another upstream behind it: nothing cached applies
        gateway.path.write_text(config(gateway.tmp, one, two).replace(
            f'base_url: "{one.url}/v1"', f'base_url: "{two.url}/v1"'))
        status, body = await reload(http, gateway.url)
        assert status == 200 and body["changes"]["providers"] == {"changed": ["one"]}
        status, headers, _ = await chat(http, gateway.url, "a", "q")
        assert status == 200 and headers["x-gatewise-cache"] == "MISS"
