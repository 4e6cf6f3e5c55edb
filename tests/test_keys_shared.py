"""Two gatewise instances on one PostgreSQL ledger (a fresh database) and Redis (a
random prefix): a key made on one works on the other, a revoked one is refused by
both within a second, the database holds no secret, and `POST /admin/reload?all=true`
reaches the other instance. Without Redis the database poll alone keeps the promise."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from proxy.server.app import build_app
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from tests.fakes.server import LoopbackServer
from tests.test_pg_ledger import pg_dsn  # noqa: F401 — the fixture
from tests.test_redis_stores import require

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {ADMIN}"}


def config(dsn: str, prefix: str | None, target: str = "a") -> str:
    state = (f'{{backend: redis, url: "redis://127.0.0.1:6379/0", prefix: "{prefix}", '
             f'instances: 2, ledger: "{dsn}"}}' if prefix else f'{{ledger: "{dsn}"}}')
    return f"""
admin: {{key: "{ADMIN}"}}
state: {state}
providers: {{a: {{type: mock}}, b: {{type: mock}}}}
models: {{m: {{targets: [{{provider: {target}, model: echo}}]}}}}
"""


async def start_two(tmp: Path, dsn: str, prefix: str | None) -> list[LoopbackServer]:
    servers = []
    for name in ("one", "two"):
        path = tmp / f"{name}.yaml"
        path.write_text(config(dsn, prefix))
        server = LoopbackServer(build_app(load_config(path)), handler_cancellation=True)
        await server.start()
        server.path = path
        servers.append(server)
    if prefix:  # both listening before anyone talks
        for server in servers:
            await asyncio.wait_for(server.app[GATEWAY].shared.events.listening.wait(), 5)
    return servers


async def chat(http, url, key) -> int:
    async with http.post(url + "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]}) as resp:
        await resp.read()
        return resp.status


async def until(seconds: float, url: str, key: str, status: int) -> float:
    """Seconds until `url` answers `key` with `status` (fails past `seconds`)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while await chat(http, url, key) != status:
            assert time.monotonic() - started < seconds, f"{url} never answered {status}"
            await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "poll-only"])
async def test_keys_spread_and_revokes_land_everywhere_within_a_second(tmp_path, pg_dsn,
                                                                        with_redis):
    if with_redis:
        require("127.0.0.1", 6379, "Redis")
    prefix = f"gwtest-{uuid.uuid4().hex[:10]}:" if with_redis else None
    one, two = await start_two(tmp_path, pg_dsn, prefix)
    secrets = []
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(one.url + "/admin/keys", headers=AUTH,
                                 json={"name": "shared", "rpm": 1000}) as resp:
                assert resp.status == 201
                secret = (await resp.json())["key"]
            secrets.append(secret)
            assert await until(1.0, two.url, secret, 200) < 1.0
            async with http.post(two.url + "/admin/keys/shared/rotate", headers=AUTH,
                                 json={"grace_seconds": 30}) as resp:
                secrets.append((await resp.json())["key"])
            assert await until(1.0, one.url, secrets[1], 200) < 1.0
            assert await chat(http, one.url, secret) == 200  # in its grace period
            async with http.delete(two.url + "/admin/keys/shared", headers=AUTH) as resp:
                assert resp.status == 200
            revoked = time.monotonic()
            for server in (two, one):
                for key in secrets:
                    await until(1.0, server.url, key, 401)
            assert time.monotonic() - revoked < 1.0
            async with http.get(one.url + "/admin/audit", headers=AUTH) as resp:
                audit = (await resp.json())["data"]
        assert [r["action"] for r in audit] == ["key.revoke", "key.rotate", "key.create"]
    finally:
        for server in (one, two):
            await server.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        dump = []
        for (table,) in await conn.fetch("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'public'"):
            rows = await conn.fetch(f'SELECT row_to_json(t)::text FROM "{table}" t')
            dump += [r[0] for r in rows]
    finally:
        await conn.close()
    text = "\n".join(dump)
    assert "shared" in text  # the rows are there…
    for secret in secrets:
        assert secret not in text and secret[3:] not in text  # …the secrets are not


async def test_reload_all_reaches_the_other_instance(tmp_path, pg_dsn):
    require("127.0.0.1", 6379, "Redis")
    one, two = await start_two(tmp_path, pg_dsn, f"gwtest-{uuid.uuid4().hex[:10]}:")
    prefix = one.app[GATEWAY].config.state.prefix
    try:
        for server in (one, two):  # the same change on each instance's copy of the file
            server.path.write_text(config(pg_dsn, prefix, target="b"))
        async with aiohttp.ClientSession() as http:
            async with http.post(one.url + "/admin/reload?all=true", headers=AUTH) as resp:
                body = await resp.json()
            assert resp.status == 200 and body["instances_notified"] >= 1
            deadline = time.monotonic() + 2.0
            while two.app[GATEWAY].current.generation != 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            async with http.post(two.url + "/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]}) as resp:
                assert resp.headers["x-gatewise-target"] == "b/echo"
        assert one.app[GATEWAY].current.generation == 2  # itself once, not again
    finally:
        for server in (one, two):
            await server.close()
