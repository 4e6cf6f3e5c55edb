"""Client keys: config, 401/403 in OpenAI's shape, constant-time compare, admin routes."""

from __future__ import annotations

import hashlib

import aiohttp
import openai
import pytest

import policies.auth as auth_module
from proxy.server.configure import ConfigError, parse_config

KEY_A = "sk-gw-alpha-0123456789abcdef"
KEY_B = "sk-gw-bravo-0123456789abcdef"
ADMIN = "sk-gw-admin-0123456789abcdef"
KEY_B_HASH = hashlib.sha256(KEY_B.encode()).hexdigest()

CONFIG = f"""
    admin: {{key: "${{ADMIN_KEY}}"}}
    providers: {{offline: {{type: mock}}}}
    models:
      echo: {{targets: [{{provider: offline, model: echo}}]}}
      echo-2: {{targets: [{{provider: offline, model: echo}}]}}
      gpt-echo: {{targets: [{{provider: offline, model: echo}}]}}
    keys:
      - {{name: alpha, key: "${{KEY_A}}"}}
      - {{name: bravo, key_sha256: {KEY_B_HASH}, models: ["echo-*", "gpt-*"]}}
"""
ENV = {"KEY_A": KEY_A, "ADMIN_KEY": ADMIN}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}


def _problems(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {})
    return info.value.problems


BASE = "providers: {offline: {type: mock}}\nmodels: {echo: {targets: [{provider: offline, model: echo}]}}\n"


def test_keys_parse_to_digests_only():
    config = parse_config(CONFIG, ENV)
    alpha, bravo = config.keys
    assert alpha.digest == hashlib.sha256(KEY_A.encode()).digest()
    assert bravo.digest.hex() == KEY_B_HASH and bravo.models == ("echo-*", "gpt-*")
    assert KEY_A not in repr(config) and KEY_A not in repr(alpha)
    assert not any(KEY_A == getattr(alpha, f, None) for f in alpha.__slots__)
    prefixed = parse_config(BASE + f"keys: [{{name: x, key: 'sha256:{KEY_B_HASH}'}}]", {})
    assert prefixed.keys[0].digest.hex() == KEY_B_HASH


def test_key_config_problems_name_their_path():
    problems = _problems(BASE + "keys:\n  - {name: a, key: '${UNSET}'}\n"
                         "  - {name: b, key_sha256: nothex}\n  - {name: c}\n"
                         "  - {name: d, key: short, rpm: 0}\n  - {name: a, key: 'x-long-enough-key-1'}\n")
    assert "keys[0].key: environment variable UNSET is not set" in problems
    assert "keys[1].key_sha256: must be a SHA-256 digest: 64 hex digits" in problems
    assert "keys[2]: needs exactly one of 'key' or 'key_sha256'" in problems
    assert any(p.startswith("keys[3].key: is too short") for p in problems)
    assert any(p.startswith("keys[3].rpm: must be an integer >= 1") for p in problems)
    assert "keys[4].name: duplicate key name 'a'" in problems


async def _post(http, url, headers=None, json=CHAT, data=None):
    async with http.post(f"{url}/v1/chat/completions", json=json if data is None else None,
                         data=data, headers=headers or {}) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_missing_wrong_and_right_keys(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    async with aiohttp.ClientSession() as http:
        status, body, _ = await _post(http, gw.url)
        assert status == 401
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "invalid_api_key" and body["error"]["param"] is None
        status, body, _ = await _post(http, gw.url, {"Authorization": "Bearer sk-wrong-key-xyz"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert "sk-wrong-key-xyz" not in body["error"]["message"]
        # 401 comes before the body is even read: a stranger learns nothing else
        status, body, _ = await _post(http, gw.url, data=b"{not json")
        assert status == 401
        status, body, _ = await _post(http, gw.url, {"Authorization": f"Bearer {KEY_A}"})
        assert status == 200 and body["choices"][0]["message"]["content"] == "hi there"
        status, _, _ = await _post(http, gw.url, {"api-key": KEY_A})
        assert status == 200
        status, _, _ = await _post(http, gw.url, {"Authorization": f"Basic {KEY_A}"})
        assert status == 401


async def test_compare_is_constant_time_over_every_key(start_gateway, monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    gw = await start_gateway(CONFIG, env=ENV)
    async with aiohttp.ClientSession() as http:
        status, _, _ = await _post(http, gw.url, {"Authorization": f"Bearer {KEY_A}"})
    assert status == 200
    # the first key matched, and the second and the admin key (which may call the data
    # plane) were compared all the same
    assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)


async def test_model_allow_list_and_models_listing(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    bravo = {"Authorization": f"Bearer {KEY_B}"}
    async with aiohttp.ClientSession() as http:
        status, body, _ = await _post(http, gw.url, bravo)
        assert status == 403
        assert body["error"] == {"message": body["error"]["message"], "type":
                                 "invalid_request_error", "param": "model",
                                 "code": "model_not_allowed"}
        status, _, _ = await _post(http, gw.url, bravo, json={**CHAT, "model": "echo-2"})
        assert status == 200
        async with http.get(f"{gw.url}/v1/models", headers=bravo) as resp:
            ids = [m["id"] for m in (await resp.json())["data"]]
        assert ids == ["echo-2", "gpt-echo"]
        async with http.get(f"{gw.url}/v1/models",
                            headers={"Authorization": f"Bearer {KEY_A}"}) as resp:
            assert len((await resp.json())["data"]) == 3
        async with http.get(f"{gw.url}/v1/models") as resp:
            assert resp.status == 401
        async with http.get(f"{gw.url}/v1/models/echo", headers=bravo) as resp:
            assert resp.status == 404


async def test_openai_sdk_sees_authentication_error(start_gateway):
    gw = await start_gateway(CONFIG, env=ENV)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-nope-nope-nope",
                                max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await client.chat.completions.create(**CHAT)
    assert info.value.code == "invalid_api_key"
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY_B, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(**CHAT)
    assert denied.value.code == "model_not_allowed"
    await client.close()


async def test_admin_routes_take_only_the_admin_key(start_gateway):
    gw = await start_gateway(CONFIG + "    state: {ledger: none}\n"
                             "    policies: {budgets: {global: {usd: 5, per: day}}}\n", env=ENV)
    async with aiohttp.ClientSession() as http:
        for path in ("/admin/keys", "/admin/spend?by=key&period=day"):
            async with http.get(gw.url + path) as resp:
                assert resp.status == 401
            async with http.get(gw.url + path,
                                headers={"Authorization": f"Bearer {KEY_A}"}) as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "admin_only"
            async with http.get(gw.url + path,
                                headers={"Authorization": "Bearer sk-admin-guess-000"}) as resp:
                assert resp.status == 401
            async with http.get(gw.url + path, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 200
        async with http.get(gw.url + "/admin/keys",
                            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            text = await resp.text()
    assert '"name":"alpha"' in text and KEY_A not in text and KEY_B_HASH not in text


@pytest.mark.parametrize("request_line,header", [
    (b"POST /v1/chat/completions", b"authorization: Bearer "),
    (b"POST /v1/messages", b"x-api-key: "), (b"GET /admin/keys", b"authorization: Bearer ")])
async def test_a_key_that_is_not_utf8_is_a_401(start_gateway, request_line, header):
    """Header bytes that are not UTF-8 reach the handler as surrogates; hashing them
    must not raise (it was a 500)."""
    import asyncio
    gw = await start_gateway(CONFIG, env=ENV)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    body = b'{"model": "echo", "max_tokens": 5, "messages": []}'
    writer.write(request_line + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                 b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode()
                 + b"\r\n" + header + b"\xff\xfe\x80\r\n\r\n" + body)
    status = (await reader.readline()).split()[1]
    writer.close()
    assert status == b"401"


async def test_admin_disabled_without_admin_key(start_gateway):
    gw = await start_gateway(BASE)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/admin/keys",
                        headers={"Authorization": "Bearer anything-at-all"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "admin_disabled"


async def test_no_keys_means_no_auth_policy_in_the_chain(start_gateway):
    from proxy.server.gateway import GATEWAY
    gw = await start_gateway(BASE)
    gateway = gw.app[GATEWAY]
    names = [type(p).__name__ for p in gateway.policies]
    assert not {"Auth", "ClientRateLimit", "Budget"} & set(names)
    async with aiohttp.ClientSession() as http:
        status, _, _ = await _post(http, gw.url)
    assert status == 200


async def test_serve_without_keys_says_so_and_binds_loopback(tmp_path):
    import signal

    from tests.test_ledger import Server
    path = tmp_path / "open.yaml"
    path.write_text(BASE + "telemetry: {log_format: text}\n")
    server = await Server(path).ready()
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(timeout=15)
    log = server.proc.stderr.read().decode()
    server.proc.stderr.close()
    assert "no client keys configured: serving WITHOUT authentication on 127.0.0.1" in log
    assert "anyone who can reach" not in log  # loopback: an info line, not the warning
