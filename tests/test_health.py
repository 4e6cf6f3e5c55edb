"""Active health checks, /health/ready, and the admin view of targets."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.server.gateway import GATEWAY
from tests.fakes.faults import Faults
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.server import LoopbackServer

CHAT = {"messages": [{"role": "user", "content": "hello"}]}
ADMIN = "admin-key-0123456789"


@pytest.fixture
async def upstream():
    """A FakeOpenAI (which serves `GET /v1/models` with its key), faults on both paths."""
    fake = FakeOpenAI()
    faults = Faults(paths=("/v1/chat/completions", "/v1/models")).attach(fake.app)
    server = LoopbackServer(fake.app, handler_cancellation=True)
    await server.start()

    class Seen(list):  # the authorization header of every models-list request
        def __getitem__(self, i):
            return self._all()[i]

        def __bool__(self):
            return bool(self._all())

        def _all(self):
            return [r.headers.get("authorization", "") for r in fake.requests
                    if r.path == "/v1/models"]

    yield fake, faults, server, Seen()
    await server.close()


async def wait_for(predicate, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def get(gw, path, headers=None):
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + path, headers=headers or {}) as resp:
            return resp.status, await resp.read()


async def test_active_check_marks_provider_unhealthy_and_ready_follows(upstream, start_gateway):
    fake, faults, server, seen = upstream
    gw = await start_gateway(f"""
providers:
  up: {{type: openai, base_url: '{server.url}/v1', api_key: {API_KEY},
        health_check: {{interval: 50ms, timeout: 500ms}}}}
models: {{main: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
""")
    health = gw.app[GATEWAY].health
    await wait_for(lambda: health.status("up") is not None)
    assert health.status("up") is True
    assert seen and seen[0] == f"Bearer {API_KEY}"  # the provider's own credentials
    status, body = await get(gw, "/health/ready")
    assert status == 200 and orjson.loads(body)["status"] == "ready"
    faults.fail(None, 500)  # the models endpoint (and chat) start failing
    await wait_for(lambda: health.status("up") is False)
    status, body = await get(gw, "/health/ready")
    assert status == 503
    assert orjson.loads(body)["unavailable_models"] == ["main"]
    faults.clear()
    await wait_for(lambda: health.status("up") is True)
    status, _ = await get(gw, "/health/ready")
    assert status == 200


@pytest.mark.parametrize("kind,path,key_header,key_value,extra", [
    ("anthropic", "/v1/models", "x-api-key", "k-anthropic-1",
     {"anthropic-version": "2023-06-01"}),
    ("gemini", "/v1beta/models", "x-goog-api-key", "k-gemini-1", {}),
    ("azure", "/openai/models?api-version=2024-10-21", "api-key", "k-azure-1", {}),
])
async def test_checks_carry_each_provider_types_credentials(start_gateway, kind, path,
                                                            key_header, key_value, extra):
    """A `GET` check authenticates as that provider type's requests do (the same
    `auth_headers`), so a healthy Anthropic or Gemini upstream is not reported down."""
    seen: list[dict[str, str]] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        ok = request.headers.get(key_header) == key_value and all(
            request.headers.get(k) == v for k, v in extra.items())
        return web.json_response({"data": []}, status=200 if ok else 401)

    app = web.Application()
    app.router.add_get(path.split("?")[0], models)
    server = LoopbackServer(app)
    await server.start()
    try:
        options = ", api_version: '2024-10-21'" if kind == "azure" else ""
        gw = await start_gateway(f"""
providers:
  up: {{type: {kind}, base_url: '{server.url}', api_key: {key_value}{options},
        health_check: {{interval: 50ms, timeout: 500ms, path: '{path}'}}}}
models: {{main: {{targets: [{{provider: up, model: m-1}}]}}}}
""")
        health = gw.app[GATEWAY].health
        await wait_for(lambda: health.status("up") is not None)
        assert health.status("up") is True, seen
        assert "content-type" not in seen[0]
    finally:
        await server.close()


async def test_unhealthy_provider_goes_last(upstream, start_gateway):
    fake, faults, server, seen = upstream
    gw = await start_gateway(f"""
providers:
  bad: {{type: openai, base_url: 'http://127.0.0.1:9/v1', api_key: x,
         health_check: {{interval: 10s, timeout: 200ms}}}}
  up: {{type: openai, base_url: '{server.url}/v1', api_key: {API_KEY}}}
models:
  main: {{targets: [{{provider: bad, model: gpt-4o}}, {{provider: up, model: gpt-4o}}]}}
""")
    health = gw.app[GATEWAY].health
    await wait_for(lambda: health.status("bad") is False)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             json={"model": "main", **CHAT}) as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-target"] == "up/gpt-4o"
            assert resp.headers["x-gatewise-attempts"] == "1"


async def test_ready_is_false_while_every_breaker_is_open(upstream, start_gateway):
    fake, faults, server, seen = upstream
    gw = await start_gateway(f"""
providers: {{up: {{type: openai, base_url: '{server.url}/v1', api_key: {API_KEY}}}}}
models: {{main: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
policies: {{breaker: {{failures: 1, reset_after: 200ms}}}}
""")
    faults.fail(1, 502)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             json={"model": "main", **CHAT}) as resp:
            assert resp.status == 502
    status, _ = await get(gw, "/health/ready")
    assert status == 503
    await asyncio.sleep(0.25)
    status, _ = await get(gw, "/health/ready")
    assert status == 200  # half-open: probes may go


async def test_admin_targets_requires_the_admin_key(upstream, start_gateway):
    fake, faults, server, seen = upstream
    yaml = f"""
providers:
  up: {{type: openai, base_url: '{server.url}/v1', api_key: {API_KEY}}}
  offline: {{type: mock}}
models:
  main: {{targets: [{{provider: up, model: gpt-4o}}, {{provider: offline, model: echo}}]}}
  other: {{targets: [{{provider: up, model: gpt-4o}}]}}
"""
    closed = await start_gateway(yaml)
    status, body = await get(closed, "/admin/targets", {"authorization": f"Bearer {ADMIN}"})
    assert status == 403
    assert orjson.loads(body)["error"]["code"] == "admin_disabled"

    gw = await start_gateway(yaml + "admin:\n  key: ${ADMIN_KEY}\n", env={"ADMIN_KEY": ADMIN})
    assert (await get(gw, "/admin/targets"))[0] == 401
    assert (await get(gw, "/admin/targets", {"authorization": "Bearer nope-nope-nope"}))[0] == 401
    faults.fail(1, 503)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             json={"model": "main", **CHAT}) as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-target"] == "offline/echo"
    status, body = await get(gw, "/admin/targets", {"authorization": f"Bearer {ADMIN}"})
    assert status == 200
    rows = {row["target"]: row for row in orjson.loads(body)["data"]}
    up = rows["up/gpt-4o"]
    assert up["models"] == ["main", "other"]
    assert up["breaker"] == "closed" and up["in_flight"] == 0
    assert up["last_error_class"] == "overloaded" and up["failures"] == 1
    assert up["success_rate"] < 1
    echo = rows["offline/echo"]
    assert echo["success_rate"] == 1 and echo["latency_ms"] is not None
    assert echo["last_error_class"] is None
    assert API_KEY not in body.decode()


async def test_ready_counts_a_model_served_by_its_fallback(start_gateway):
    # Regression: a model whose own targets were all disabled but whose fallback
    # could answer was listed as unavailable.
    gw = await start_gateway("""
        providers:
          offline: {type: mock}
          gone: {type: openai, api_key: "${UNSET_KEY}"}
        models:
          echo: {targets: [{provider: offline, model: echo}]}
          smart: {targets: [{provider: gone, model: gpt-4o}], fallbacks: [echo]}
          lonely: {targets: [{provider: gone, model: gpt-4o}]}
    """)
    status, body = await get(gw, "/health/ready")
    ready = orjson.loads(body)
    assert status == 200 and ready["models"] == 2
    assert ready["unavailable_models"] == ["lonely"]
