"""A provider's pool of credentials (`api_keys`) against the faithful fake OpenAI:
spread by weight, a credential's own 429 / quota / refusal cools that credential
and the request moves at once to another key of the same provider, never to a
fallback while one is left; keys appear by name only."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer

K1, K2, K3 = "sk-pool-first-0123456789", "sk-pool-second-0123456789", "sk-pool-third-012345"
ADMIN = "admin-key-0123456789abcdef"


def config(url: str, pool: str, extra: str = "") -> str:
    return f"""
    admin: {{key: "{ADMIN}"}}
    providers:
      openai: {{type: openai, base_url: "{url}/v1", api_keys: {pool}}}
      spare: {{type: mock}}
    models:
      gpt: {{targets: [{{provider: openai, model: gpt-4o}}], fallbacks: [backup]}}
      backup: {{targets: [{{provider: spare, model: echo}}]}}
    {extra}
    """


@pytest.fixture
async def fake():
    fake = FakeOpenAI(api_key=K1)
    fake.keys |= {K2, K3}
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake


async def chat(http: aiohttp.ClientSession, url: str, stream: bool = False):
    async with http.post(f"{url}/v1/chat/completions", json={
            "model": "gpt", "stream": stream,
            "messages": [{"role": "user", "content": "hello there"}]}) as resp:
        return resp.status, resp.headers, await resp.read()


async def admin(http: aiohttp.ClientSession, url: str, path: str):
    async with http.get(url + path, headers={"authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        return resp.headers, await resp.read()


async def test_requests_spread_over_the_pool_by_weight(start_gateway, fake):
    gw = await start_gateway(config(fake.url, '[{key: "${K1}", name: big, weight: 3}, '
                                              '{key: "${K2}", name: small}]'),
                             env={"K1": K1, "K2": K2})
    async with aiohttp.ClientSession() as http:
        for _ in range(40):
            status, headers, _ = await chat(http, gw.url)
            assert status == 200 and headers["x-gatewise-target"] == "openai/gpt-4o"
    assert fake.by_key == {K1: 30, K2: 10}  # smooth weighted round robin: exact shares


async def test_a_credential_out_of_quota_cools_and_the_next_key_serves(start_gateway, fake):
    fake.quota_spent.add(K1)
    gw = await start_gateway(config(fake.url, '["${K1}", "${K2}"]'), env={"K1": K1, "K2": K2})
    async with aiohttp.ClientSession() as http:
        for stream in (False, True, False, True, False):
            status, headers, body = await chat(http, gw.url, stream)
            assert status == 200
            assert headers["x-gatewise-target"] == "openai/gpt-4o"  # never the fallback
            assert "x-gatewise-fallback" not in headers
            if stream:
                assert body.endswith(b"data: [DONE]\n\n")
        _, targets = await admin(http, gw.url, "/admin/targets")
        _, metrics = await admin(http, gw.url, "/metrics")
    assert fake.by_key == {K1: 1, K2: 5}  # the first key was tried once, then left alone
    rows = {row["target"]: row for row in orjson.loads(targets)["data"]}
    assert "spare/echo" not in rows or rows["spare/echo"]["requests"] == 0
    pool = {c["name"]: c for c in rows["openai/gpt-4o"]["credentials"]}
    assert pool["0"]["state"] == "cooling" and pool["0"]["cooling_s"] > 590  # quota_cooldown
    assert pool["0"]["failures"] == 1 and pool["0"]["last_error_class"] == "quota_exhausted"
    assert pool["1"]["state"] == "ready" and pool["1"]["failures"] == 0
    assert rows["openai/gpt-4o"]["breaker"] == "closed"  # the target itself is fine
    text = metrics.decode()
    assert 'gatewise_upstream_credential_attempts_total{provider="openai",credential="1",' \
           'outcome="ok"} 5.0' in text
    assert 'gatewise_upstream_credential_cooldowns_total{provider="openai",credential="0",' \
           'error_class="quota_exhausted"} 1.0' in text
    for secret in (K1, K2):
        assert secret not in targets.decode() and secret not in text


async def test_a_refused_key_moves_to_the_next_at_once(start_gateway, fake):
    fake.keys.discard(K1)  # revoked at the provider
    gw = await start_gateway(config(fake.url, '["${K1}", "${K2}", "${K3}"]'),
                             env={"K1": K1, "K2": K2, "K3": K3})
    async with aiohttp.ClientSession() as http:
        status, headers, _ = await chat(http, gw.url)
        assert status == 200 and headers["x-gatewise-attempts"] == "2"
        for _ in range(6):
            assert (await chat(http, gw.url))[0] == 200
    assert fake.by_key[K1] == 1 and fake.by_key[K2] + fake.by_key[K3] == 7


async def test_every_key_refused_falls_back_then_skips_the_cooling_pool(start_gateway, fake):
    fake.quota_spent |= {K1, K2}
    gw = await start_gateway(config(fake.url, '["${K1}", "${K2}"]'), env={"K1": K1, "K2": K2})
    async with aiohttp.ClientSession() as http:
        status, headers, _ = await chat(http, gw.url)
        assert status == 200 and headers["x-gatewise-fallback"] == "backup"
        status, headers, _ = await chat(http, gw.url)
        assert status == 200 and headers["x-gatewise-fallback"] == "backup"
    assert fake.by_key == {K1: 1, K2: 1}  # the second request did not knock again


async def test_a_server_error_is_not_the_credentials_fault(start_gateway, fake):
    fake.script(Reply(status=500))
    gw = await start_gateway(config(fake.url, '["${K1}", "${K2}"]',
                                    "policies: {retry: {attempts: 0}}"),
                             env={"K1": K1, "K2": K2})
    async with aiohttp.ClientSession() as http:
        status, headers, _ = await chat(http, gw.url)
        _, targets = await admin(http, gw.url, "/admin/targets")
    assert headers.get("x-gatewise-fallback") == "backup"  # the plan's own fallback
    pool = orjson.loads(targets)["data"][0]["credentials"]
    assert all(c["state"] == "ready" for c in pool)


async def test_no_key_reaches_a_log_line(start_gateway, fake, caplog):
    fake.quota_spent.add(K1)
    gw = await start_gateway(config(fake.url, '["${K1}", "${K2}"]'), env={"K1": K1, "K2": K2})
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as http:
            await chat(http, gw.url)
            await chat(http, gw.url, stream=True)
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert K1 not in text and K2 not in text


def test_pool_config_problems_name_their_fields():
    from proxy.server.configure import ConfigError, parse_config
    base = """
    providers:
      p: {type: openai, %s}
    models: {m: {targets: [{provider: p, model: x}]}}
    """
    with pytest.raises(ConfigError) as err:
        parse_config(base % 'api_key: "sk-000000000000", api_keys: ["sk-1111111111"]', {})
    assert err.value.problems == ["providers.p.api_keys: give either api_key or api_keys, "
                                  "not both"]
    with pytest.raises(ConfigError) as err:
        parse_config(base % 'api_keys: [{key: "a-key-123456", name: "a b"}, '
                            '{key: "k-2345678901", weight: -1}, {name: x}, 7, "a-key-123456"]',
                     {})
    assert err.value.problems == [
        "providers.p.api_keys[0].name: must be letters, digits, '.', '_' or '-' (at most 64), "
        "starting with a letter or digit",
        "providers.p.api_keys[1].weight: must be a number >= 0, got -1",
        "providers.p.api_keys[2].key: is required",
        "providers.p.api_keys[3]: must be a key or a mapping with 'key', 'name' and 'weight'",
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(base % 'api_keys: ["sk-same-key-1234", "sk-same-key-1234"]', {})
    assert "credentials '0' and '1' are the same key" in err.value.problems[0]
    config = parse_config(base % 'api_keys: ["${A}", "${B}", "${C}"]', {"B": "sk-bbbbbbbbbbbb"})
    provider = config.providers["p"]
    assert provider.enabled and [c.name for c in provider.credentials] == ["1"]
    assert provider.unset_credentials == ("0", "2") and provider.api_key == "sk-bbbbbbbbbbbb"
    config = parse_config(base % 'api_keys: ["${A}", "${B}"]', {})
    assert config.providers["p"].disabled_reason == \
        "environment variable(s) A, B are not set (every api_keys entry)"
    config = parse_config(base % 'api_keys: ["sk-aaaaaaaaaaaa", {key: "sk-bbbbbbbbbbbb"}]', {})
    assert {"sk-aaaaaaaaaaaa", "sk-bbbbbbbbbbbb"} <= set(config.secrets())
    assert "sk-aaaa" not in repr(config.providers["p"])


async def test_rotating_a_pool_key_under_load_drops_nothing(tmp_path, fake):
    import asyncio

    from proxy.server.app import build_app
    from proxy.server.configure import load_config

    path = tmp_path / "gatewise.yaml"
    path.write_text(config(fake.url, f'["{K1}", "{K2}"]'))
    failures: list[int] = []
    stop = asyncio.Event()
    async with LoopbackServer(build_app(load_config(path)), handler_cancellation=True) as gw:
        async def client(n: int) -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    status, headers, body = await chat(http, gw.url, stream=n % 2 == 1)
                    if status != 200 or "x-gatewise-fallback" in headers:
                        failures.append(status)

        clients = [asyncio.create_task(client(n)) for n in range(8)]
        await asyncio.sleep(0.3)
        path.write_text(config(fake.url, f'["{K3}", "{K2}"]'))  # K1 out, K3 in
        async with aiohttp.ClientSession() as http, http.post(
                gw.url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["changes"]["providers"] == {"changed": ["openai"]}
        await asyncio.sleep(0.1)  # requests that began on K1 have ended...
        fake.keys.discard(K1)  # ...and the provider revokes it
        used_before = dict(fake.by_key)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    assert fake.by_key.get(K1, 0) == used_before.get(K1, 0)  # nothing sent K1 any more
    assert fake.by_key[K3] > 0


def test_an_unchanged_pool_keeps_its_state_and_takes_the_new_secrets_list():
    from proxy.engine.credentials import build_pools
    from proxy.server.configure import parse_config
    text = """
    providers:
      p: {type: openai, api_keys: ["sk-aaaaaaaaaaaa", "sk-bbbbbbbbbbbb"]}
      %s
    models: {m: {targets: [{provider: p, model: x}]}}
    """
    old = parse_config(text % "", {})
    new = parse_config(text % 'q: {type: openai, api_key: "sk-new-elsewhere-0123"}', {})
    assert old.providers["p"] == new.providers["p"]  # equal: its secrets list is no part
    pools = build_pools(old.providers)
    pools["p"].entries[0].requests = 7
    again = build_pools(new.providers, pools)
    assert again["p"] is pools["p"] and again["p"].entries[0].requests == 7
    assert "sk-new-elsewhere-0123" in again["p"].entries[0].provider.secrets
    assert again["p"].entries[1].provider.api_key == "sk-bbbbbbbbbbbb"
