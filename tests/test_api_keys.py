"""Client keys through the admin API and `gatewise keys`, on the ledger's SQLite file:
made, used, limited, rotated and revoked; refused when they should be; audited;
and never stored as secrets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.server import cli
from proxy.server.app import build_app
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from tests.fakes.server import LoopbackServer

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {ADMIN}"}
FILE_KEY = "file-key-0123456789abcdef"

CONFIG = """
admin: {{key: "{admin}"}}
state: {{ledger: "sqlite:{ledger}"}}
providers:
  mock: {{type: mock, chunk_delay_ms: {delay}}}
models:
  m: {{targets: [{{provider: mock, model: echo, price: {{input: 100000, output: 100000}}}}]}}
  other: {{targets: [{{provider: mock, model: echo2}}]}}
{keys}
"""


def write(path: Path, keys: str = f"keys: [{{name: filekey, key: {FILE_KEY}}}]",
          delay: int = 0) -> None:
    path.write_text(CONFIG.format(admin=ADMIN, ledger=path.parent / "ledger.db", keys=keys,
                                  delay=delay))


@pytest.fixture
async def gw(tmp_path):
    path = tmp_path / "gatewise.yaml"
    write(path, delay=30)
    server = LoopbackServer(build_app(load_config(path)), handler_cancellation=True)
    await server.start()
    server.path = path
    yield server
    await server.close()


async def api(http, url, method, path, body=None, headers=AUTH):
    async with http.request(method, url + path, headers=headers,
                            **({"json": body} if body is not None else {})) as resp:
        return resp.status, await resp.json()


async def chat(http, url, key, model="m", text="hi", stream=False):
    async with http.post(url + "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": model, "stream": stream,
            "messages": [{"role": "user", "content": text}]}) as resp:
        body = await resp.read()
        return resp.status, (json.loads(body) if not stream or resp.status != 200 else body)


async def test_create_use_rotate_revoke(gw):
    async with aiohttp.ClientSession() as http:
        status, made = await api(http, gw.url, "POST", "/admin/keys", {
            "name": "alice", "models": ["m"], "rpm": 100, "metadata": {"team": "search"}})
        assert status == 201
        secret = made["key"]
        assert secret.startswith("gw-") and len(secret) >= 3 + 43
        assert made["prefix"] == secret[:9] and made["status"] == "active"
        assert made["metadata"] == {"team": "search"} and made["source"] == "api"
        assert (await chat(http, gw.url, secret))[0] == 200
        status, body = await chat(http, gw.url, secret, model="other")
        assert status == 403 and body["error"]["code"] == "model_not_allowed"
        status, rotated = await api(http, gw.url, "POST", "/admin/keys/alice/rotate",
                                    {"grace_seconds": 60})
        assert status == 200 and rotated["key"] != secret
        assert rotated["previous_key_valid_until"] > time.time() + 50
        assert (await chat(http, gw.url, secret))[0] == 200  # within its grace period
        assert (await chat(http, gw.url, rotated["key"]))[0] == 200
        status, again = await api(http, gw.url, "POST", "/admin/keys/alice/rotate",
                                  {"grace_seconds": 0})
        assert (await chat(http, gw.url, rotated["key"]))[0] == 401  # no grace asked
        assert (await chat(http, gw.url, secret))[0] == 401  # only one old secret is kept
        status, revoked = await api(http, gw.url, "DELETE", "/admin/keys/alice")
        assert status == 200 and revoked["status"] == "revoked"
        status, body = await chat(http, gw.url, again["key"])
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert (await api(http, gw.url, "DELETE", "/admin/keys/alice"))[0] == 404
        status, body = await api(http, gw.url, "POST", "/admin/keys", {"name": "alice"})
        assert status == 409 and body["error"]["code"] == "key_exists"  # never reused
        status, audit = await api(http, gw.url, "GET", "/admin/audit")
    actions = [(row["action"], row["key"]) for row in audit["data"]]
    assert actions == [("key.revoke", "alice"), ("key.rotate", "alice"),
                       ("key.rotate", "alice"), ("key.create", "alice")]
    row = audit["data"][0]
    assert row["admin"].startswith("admin:") and ADMIN not in row["admin"]
    assert row["source"] == "127.0.0.1" and abs(row["at"] - time.time()) < 30


async def test_limits_budget_and_expiry_are_honoured(gw):
    async with aiohttp.ClientSession() as http:
        _, a = await api(http, gw.url, "POST", "/admin/keys", {"name": "limited", "rpm": 2})
        assert [(await chat(http, gw.url, a["key"]))[0] for _ in range(3)] == [200, 200, 429]
        _, b = await api(http, gw.url, "POST", "/admin/keys", {
            "name": "broke", "budget": {"usd": 0.000001}})
        status, body = await chat(http, gw.url, b["key"], text="a rather long question " * 5)
        assert status == 429 and body["error"]["code"] == "budget_exceeded"
        _, c = await api(http, gw.url, "POST", "/admin/keys", {
            "name": "brief", "expires_at": "2001-01-01T00:00:00Z"})
        assert c["status"] == "expired"
        status, body = await chat(http, gw.url, c["key"])
        assert status == 401 and "expired" in body["error"]["message"]
        status, c2 = await api(http, gw.url, "PATCH", "/admin/keys/brief",
                               {"expires_at": time.time() + 3600, "rpm": None})
        assert status == 200 and c2["status"] == "active"
        assert (await chat(http, gw.url, c["key"]))[0] == 200
        await api(http, gw.url, "POST", "/admin/keys", {"name": "gone"})
        await api(http, gw.url, "DELETE", "/admin/keys/gone")
        status, listing = await api(http, gw.url, "GET", "/admin/keys")
        _, everything = await api(http, gw.url, "GET", "/admin/keys?include_revoked=true")
        assert (await api(http, gw.url, "GET", "/admin/keys?include_revoked=1"))[0] == 400
    assert "gone" not in {v["name"] for v in listing["data"]}
    assert {v["name"]: v["status"] for v in everything["data"]}["gone"] == "revoked"
    views = {v["name"]: v for v in listing["data"]}
    assert views["filekey"]["source"] == "file" and views["broke"]["budget"]["usd"] == 1e-06
    assert views["limited"]["usage"] == {"requests_remaining": 0}
    assert views["limited"]["spend"]["usd"] > 0 and listing["key_api"] == {"enabled": True}
    assert all("key" not in v and "digest" not in v for v in listing["data"])


async def test_names_bodies_and_callers_are_checked(gw):
    async with aiohttp.ClientSession() as http:
        for name in ("x'; DROP TABLE api_keys; --", "", "a b", "../etc", "é", "a" * 65, 7):
            status, body = await api(http, gw.url, "POST", "/admin/keys", {"name": name})
            assert status == 400 and body["error"]["code"] == "invalid_key", name
        status, body = await api(http, gw.url, "POST", "/admin/keys",
                                 {"name": "ok", "key": "gw-mine", "rpm": "10", "extra": 1})
        assert status == 400 and "key: unknown field" in body["error"]["message"]
        assert "rpm: must be an integer" in body["error"]["message"]
        assert (await api(http, gw.url, "POST", "/admin/keys", ["x"]))[0] == 400
        async with http.post(gw.url + "/admin/keys", headers=AUTH, data=b"{nope") as resp:
            assert resp.status == 400
        status, body = await api(http, gw.url, "POST", "/admin/keys", {"name": "filekey"})
        assert status == 409 and "config file" in body["error"]["message"]
        status, body = await api(http, gw.url, "POST", "/admin/keys", {"name": "admin"})
        assert status == 409 and "admin key's name" in body["error"]["message"]
        for method, path in (("PATCH", "/admin/keys/filekey"),
                             ("DELETE", "/admin/keys/filekey")):
            status, body = await api(http, gw.url, method, path, {})
            assert status == 409 and body["error"]["code"] == "file_key"
        assert (await api(http, gw.url, "GET", "/admin/keys/..%2F..%2Fetc"))[0] == 404
        assert (await api(http, gw.url, "PATCH", "/admin/keys/ghost", {"rpm": 1}))[0] == 404
        # without the admin key: 401; with a client key: 403; nothing is made
        for headers, expected in (({}, 401), ({"authorization": "Bearer wrong"}, 401),
                                  ({"authorization": f"Bearer {FILE_KEY}"}, 403)):
            for method, path in (("POST", "/admin/keys"), ("GET", "/admin/keys"),
                                 ("DELETE", "/admin/keys/x"), ("GET", "/admin/audit"),
                                 ("POST", "/admin/keys/x/rotate"), ("POST", "/admin/reload")):
                status, _ = await api(http, gw.url, method, path, {"name": "sneaky"}, headers)
                assert status == expected, (method, path, headers)
        _, made = await api(http, gw.url, "POST", "/admin/keys", {"name": "client"})
        status, _ = await api(http, gw.url, "GET", "/admin/keys",
                              headers={"authorization": f"Bearer {made['key']}"})
        assert status == 403
        _, listing = await api(http, gw.url, "GET", "/admin/keys")
    assert "sneaky" not in {v["name"] for v in listing["data"]}


async def test_concurrent_creates_of_one_name_make_one_key(gw):
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(api(http, gw.url, "POST", "/admin/keys",
                                             {"name": "race"}) for _ in range(20)))
    assert sorted(status for status, _ in answers) == [201] + [409] * 19


async def test_the_database_holds_no_secret(gw):
    secrets = []
    async with aiohttp.ClientSession() as http:
        for i in range(5):
            _, made = await api(http, gw.url, "POST", "/admin/keys", {"name": f"k{i}"})
            secrets.append(made["key"])
            _, rotated = await api(http, gw.url, "POST", f"/admin/keys/k{i}/rotate")
            secrets.append(rotated["key"])
            assert (await chat(http, gw.url, rotated["key"]))[0] == 200
    await gw.close()  # every write flushed, the WAL checkpointed or not: read it all
    blobs = b"".join(p.read_bytes() for p in gw.path.parent.glob("ledger.db*"))
    assert blobs  # the database and its WAL
    for secret in secrets:
        assert secret.encode() not in blobs
        assert secret[3:].encode() not in blobs  # nor its random part alone
        assert secret[:12].encode() not in blobs  # more than the display prefix


async def test_a_key_revoked_mid_request_finishes_that_request_only(gw):
    async with aiohttp.ClientSession() as http:
        _, made = await api(http, gw.url, "POST", "/admin/keys", {"name": "mid"})
        words = " ".join(f"w{i}" for i in range(15))
        stream = asyncio.create_task(chat(http, gw.url, made["key"], text=words, stream=True))
        await asyncio.sleep(0.1)
        assert (await api(http, gw.url, "DELETE", "/admin/keys/mid"))[0] == 200
        assert (await chat(http, gw.url, made["key"]))[0] == 401
        status, body = await stream
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")


async def test_an_open_gateway_needs_keys_from_its_first_api_key_on(tmp_path):
    path = tmp_path / "gatewise.yaml"
    write(path, keys="")
    async with LoopbackServer(build_app(load_config(path))) as server, \
            aiohttp.ClientSession() as http:
        assert (await chat(http, server.url, "anything"))[0] == 200  # open: no keys yet
        _, made = await api(http, server.url, "POST", "/admin/keys", {"name": "first"})
        assert (await chat(http, server.url, "anything"))[0] == 401
        assert (await chat(http, server.url, made["key"]))[0] == 200
        await api(http, server.url, "DELETE", "/admin/keys/first")
        assert (await chat(http, server.url, "anything"))[0] == 401  # never open again


async def test_a_reload_adding_a_file_key_named_like_an_api_key_is_refused(gw):
    async with aiohttp.ClientSession() as http:
        await api(http, gw.url, "POST", "/admin/keys", {"name": "shared-name"})
        write(gw.path, keys=f"keys: [{{name: shared-name, key: {FILE_KEY}}}]")
        status, body = await api(http, gw.url, "POST", "/admin/reload")
        _, audit = await api(http, gw.url, "GET", "/admin/audit?limit=1")
    assert status == 422 and body["problems"] == [
        "keys[0].name: 'shared-name' is already the name of a key made through the admin "
        "API (names are unique across the file and the API)"]
    row = audit["data"][0]
    assert (row["action"], row["key"], row["detail"]) == (
        "config.reload", None, {"status": "refused", "generation": 1})


async def test_a_database_that_says_no_changes_nothing(gw):
    store = gw.app[GATEWAY].keyring.store
    store._conn.close()  # the database goes away under the running gateway
    async with aiohttp.ClientSession() as http:
        status, body = await api(http, gw.url, "POST", "/admin/keys", {"name": "x"})
        assert status == 503 and body["error"]["code"] == "key_store_unavailable"
        assert (await chat(http, gw.url, FILE_KEY))[0] == 200  # serving goes on
    store._connect()  # (so the fixture can close it)


async def test_the_cli_makes_keys_the_running_gateway_honours(gw, capsys):
    config = str(gw.path)

    async def shell(*argv: str) -> int:  # its own thread and event loop, as a shell's
        return await asyncio.to_thread(cli.main, list(argv))
    assert await shell("keys", "create", "shell", "--config", config, "--rpm", "50",
                     "--models", "m", "--metadata", "team=ops", "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert made["rpm"] == 50 and made["metadata"] == {"team": "ops"}
    async with aiohttp.ClientSession() as http:
        assert await _within(1.0, lambda: chat(http, gw.url, made["key"]), 200)
        assert await shell("keys", "rotate", "shell", "--config", config, "--grace", "0",
                         "--json") == 0
        rotated = json.loads(capsys.readouterr().out)
        assert await _within(1.0, lambda: chat(http, gw.url, rotated["key"]), 200)
        assert (await chat(http, gw.url, made["key"]))[0] == 401
        assert await shell("keys", "update", "shell", "--config", config, "--clear", "rpm") == 0
        assert await shell("keys", "revoke", "shell", "--config", config) == 0
        assert await _within(1.0, lambda: chat(http, gw.url, rotated["key"]), 401)
        _, audit = await api(http, gw.url, "GET", "/admin/audit?key=shell&limit=2")
    capsys.readouterr()
    assert [r["action"] for r in audit["data"]] == ["key.revoke", "key.update"]
    assert audit["data"][0]["admin"].startswith("cli:") and audit["data"][0]["source"] == "local"
    assert audit["next_before"] == audit["data"][-1]["id"]
    assert await shell("keys", "list", "--config", config) == 0
    table = capsys.readouterr().out
    assert "shell" not in table and "filekey" in table
    assert await shell("keys", "list", "--config", config, "--all") == 0
    table = capsys.readouterr().out
    assert "shell" in table and "revoked" in table and "filekey" in table
    assert rotated["key"] not in table
    assert await shell("keys", "revoke", "shell", "--config", config) == 1
    assert await shell("keys", "create", "filekey", "--config", config) == 1
    assert "config file" in capsys.readouterr().err


async def _within(seconds: float, call, expected: int) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        status = (await call())[0]
        if status == expected:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def test_an_api_keys_budget_survives_a_restart(tmp_path):
    path = tmp_path / "gatewise.yaml"
    write(path)
    async with LoopbackServer(build_app(load_config(path))) as server, \
            aiohttp.ClientSession() as http:
        _, made = await api(http, server.url, "POST", "/admin/keys", {
            "name": "thrifty", "budget": {"usd": 4, "per": "day"}})  # a request ~$1.5
        statuses = [await small(http, server.url, made["key"]) for _ in range(6)]
        assert statuses[0] == 200 and statuses[-1] == 429
        _, view = await api(http, server.url, "GET", "/admin/keys/thrifty")
        spent = view["budget"]["spent_usd"]
        assert spent > 0
    async with LoopbackServer(build_app(load_config(path))) as server, \
            aiohttp.ClientSession() as http:  # a restart: the spend comes from the ledger
        _, view = await api(http, server.url, "GET", "/admin/keys/thrifty")
        assert view["budget"]["spent_usd"] == pytest.approx(spent)
        assert await small(http, server.url, made["key"]) == 429


async def small(http, url, key) -> int:
    """A request whose reservation is small (5 tokens out at most)."""
    async with http.post(url + "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "spend a little"}]}) as resp:
        await resp.read()
        return resp.status


async def test_a_huge_body_is_refused(gw):
    async with aiohttp.ClientSession() as http:
        status, body = await api(http, gw.url, "POST", "/admin/keys", {
            "name": "big", "metadata": {f"k{i}": "v" * 100 for i in range(1000)}})
    assert status == 413 and body["error"]["code"] == "request_too_large"
