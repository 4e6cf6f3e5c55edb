"""The admin key on the data plane: its own identity, every model, no limits, the ledger
says `admin`, and neither logs nor explanations ever hold the key itself."""

from __future__ import annotations

import io
import logging

import aiohttp
import orjson
import pytest

from proxy.server.gateway import GATEWAY
from proxy.server.logs import log_handler

ADMIN = "admin-Zq8Xv3Lm9Tt2Rr7Kk1"
CLIENT = "client-Hh4Jj6Nn8Pp0Ww2Yy5"
CONFIG = """
admin: {key: "${ADMIN}"}
providers: {a: {type: mock}, b: {type: mock}}
models:
  open: {targets: [{provider: a, model: echo}]}
  closed: {targets: [{provider: b, model: echo}]}
keys:
  - {name: client, key: "${CLIENT}", models: [open], rpm: 1}
routes:
  - {name: admins, match: {key: admin}, model: closed}
"""


@pytest.fixture
def raw_logs():
    """Every log line through the real JSON formatter, with *no* secret to redact: what
    the gateway itself writes."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [log_handler("json", [], stream=buffer)]
    root.setLevel(logging.INFO)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


async def post(gw, key, model="open", headers=None):
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", headers={
                "authorization": f"Bearer {key}", **(headers or {})}, json={
                "model": model, "messages": [{"role": "user", "content": "hi"}]}) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_the_admin_key_calls_as_admin_and_is_never_written(start_gateway, raw_logs):
    gw = await start_gateway(CONFIG, env={"ADMIN": ADMIN, "CLIENT": CLIENT})
    status, headers, body = await post(gw, ADMIN, headers={"x-gatewise-explain": "1"})
    assert status == 200
    assert headers["x-gatewise-route"] == "rule=admins; strategy=priority"
    assert headers["x-gatewise-target"] == "b/echo"
    explain = orjson.loads(headers["x-gatewise-explain"])
    assert explain["rule"] == "admins" and explain["models"][0]["model"] == "closed"
    for _ in range(3):  # no rate limit of its own; the client's rpm: 1 is the client's
        assert (await post(gw, ADMIN))[0] == 200
    assert (await post(gw, CLIENT))[0] == 200
    assert (await post(gw, CLIENT))[0] == 429
    assert (await post(gw, CLIENT, "closed"))[0] == 403
    # the client key may not ask for an explanation, nor pose as admin by name
    status, headers, _ = await post(gw, CLIENT, headers={"x-gatewise-explain": "1"})
    assert "x-gatewise-explain" not in headers
    assert (await post(gw, "admin"))[0] == 401
    assert (await post(gw, ADMIN[:-1]))[0] == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/admin/keys", headers={
                "authorization": f"Bearer {ADMIN}"}) as resp:
            listed = await resp.text()
    logs = raw_logs.getvalue()
    lines = [orjson.loads(line) for line in logs.splitlines() if '"msg":"request"' in line]
    assert {line.get("key_name") for line in lines} >= {"admin", "client"}
    for text in (logs, listed, explain and orjson.dumps(explain).decode()):
        assert ADMIN not in text and ADMIN[6:] not in text
    assert gw.app[GATEWAY].admin_identity.name == "admin"
