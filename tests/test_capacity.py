"""Capacity: per-provider connection pools and the gateway-wide admission limit.

A request waiting for a pooled upstream connection is the gateway's own wait:
it never trips the first-token deadline, never counts as an upstream failure
and never opens a breaker. Past `server.max_in_flight` the gateway refuses at
once with a 503 a client may retry.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.config.types import DEFAULT_MAX_CONNECTIONS
from proxy.engine.transport import ConnectionGate
from proxy.server.gateway import GATEWAY
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer


class Concurrency:
    """Counts the requests a fake upstream holds at once."""

    def __init__(self, app: web.Application) -> None:
        self.now = self.peak = 0
        app.middlewares.append(self._middleware)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await handler(request)
        finally:
            self.now -= 1


@pytest.fixture
async def fake():
    fake = FakeOpenAI()
    fake.seen = Concurrency(fake.app)
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake


def body(stream: bool = True) -> dict:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def stream(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.post(url + "/v1/chat/completions", json=body()) as resp:
        return resp.status, await resp.read()


async def test_a_pool_wait_is_not_an_upstream_failure(fake, start_gateway):
    # Each stream takes ~0.5 s; the first-token deadline is 0.3 s and one failure
    # opens the breaker. Six streams through two connections: four wait for a
    # connection longer than the deadline, and none of them may fail for it.
    fake.default = Reply(text="a b c d e f", chunk_delay=0.08)
    gw = await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY},
                max_connections: 2}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
        policies:
          timeouts: {{first_token: 0.3s}}
          breaker: {{failures: 1, reset_after: 30s}}
    """)
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(stream(http, gw.url) for _ in range(6)))
        async with http.get(gw.url + "/metrics") as resp:
            metrics = await resp.text()
    assert [status for status, _ in results] == [200] * 6
    assert all(raw.endswith(b"data: [DONE]\n\n") for _, raw in results)
    assert fake.seen.peak == 2  # the limit held upstream
    gateway = gw.app[GATEWAY]
    assert gateway.dispatcher.breakers.state("up/gpt-4o") == "closed"
    assert 'gatewise_breaker_state{target="up/gpt-4o"} 0' in metrics
    assert gateway.transports["up"].gate.busy == 0  # every slot given back


async def test_the_default_pool_is_sized_for_thousands_of_streams(fake, start_gateway):
    gw = await start_gateway(f"""
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
    """)
    transport = gw.app[GATEWAY].transports["up"]
    assert DEFAULT_MAX_CONNECTIONS >= 5000
    assert transport.gate.limit == DEFAULT_MAX_CONNECTIONS
    assert transport._session.connector.limit in (0, DEFAULT_MAX_CONNECTIONS)  # no hidden cap


async def test_a_wait_past_the_deadline_is_a_503_that_may_be_retried(fake, start_gateway):
    fake.default = Reply(text="a b c d e", chunk_delay=0.15)  # holds its connection ~0.6 s
    gw = await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY},
                max_connections: 1}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
        policies: {{retry: {{deadline: 0.3s}}, breaker: {{failures: 1}}}}
    """)
    async with aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(stream(http, gw.url))
        await asyncio.sleep(0.1)
        async with http.post(gw.url + "/v1/chat/completions", json=body(False)) as resp:
            assert resp.status == 503
            assert resp.headers["x-should-retry"] == "true"
            assert resp.headers["retry-after"] == "1"
            error = orjson.loads(await resp.read())["error"]
            assert error["code"] == "upstream_connections_busy"
        status, raw = await first
        assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    assert gw.app[GATEWAY].dispatcher.breakers.state("up/gpt-4o") == "closed"
    assert len(fake.requests) == 1


async def test_the_gate_hands_slots_over_in_order_and_survives_cancels():
    gate = ConnectionGate("p", 1)
    assert await gate.acquire(1.0) == 0.0
    order: list[int] = []

    async def take(i: int) -> None:
        await gate.acquire(5.0)
        order.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks[1].cancel()  # a client that left while waiting
    gate.release()
    await asyncio.sleep(0.01)
    gate.release()
    await asyncio.sleep(0.01)
    assert order == [0, 2]
    gate.release()
    assert gate.busy == 0
    await gate.acquire(0.0)
    with pytest.raises(Exception) as caught:
        await gate.acquire(0.05)
    assert getattr(caught.value, "code", None) == "upstream_connections_busy"


async def test_past_max_in_flight_the_gateway_refuses_at_once(fake, start_gateway):
    fake.default = Reply(text="a b c d e", chunk_delay=0.1)
    gw = await start_gateway(f"""
        server: {{max_in_flight: 2}}
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
    """)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        busy = [asyncio.ensure_future(stream(http, gw.url)) for _ in range(2)]
        await asyncio.sleep(0.15)
        began = loop.time()
        async with http.post(gw.url + "/v1/chat/completions", json=body(False)) as resp:
            assert resp.status == 503
            assert loop.time() - began < 0.1  # refused, not queued
            assert resp.headers["retry-after"] == "1"
            assert resp.headers["x-should-retry"] == "true"
            assert orjson.loads(await resp.read())["error"]["code"] == "server_overloaded"
        async with http.get(gw.url + "/health/live") as resp:
            assert resp.status == 200  # probes are never refused
        assert [status for status, _ in await asyncio.gather(*busy)] == [200, 200]
        async with http.post(gw.url + "/v1/chat/completions", json=body(False)) as resp:
            assert resp.status == 200
        async with http.get(gw.url + "/metrics") as resp:
            metrics = await resp.text()
    assert ('gatewise_requests_total{endpoint="chat",model="",target="",status="503",'
            'error_class="server_overloaded"} 1.0') in metrics
    assert len(fake.requests) == 3
    assert gw.app[GATEWAY].in_flight == 0


async def test_hundreds_of_streams_through_a_small_pool_all_complete(fake, start_gateway):
    # Many clients at once, far more than the pool: every stream completes, the
    # upstream never sees more than the limit, nothing is counted against it.
    fake.default = Reply(text="a b c", chunk_delay=0.02)
    gw = await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY},
                max_connections: 20}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
        policies: {{timeouts: {{first_token: 2s}}, breaker: {{failures: 1}}}}
    """)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        results = await asyncio.gather(*(stream(http, gw.url) for _ in range(300)))
    assert [status for status, _ in results] == [200] * 300
    assert all(raw.endswith(b"data: [DONE]\n\n") for _, raw in results)
    assert fake.seen.peak == 20
    assert gw.app[GATEWAY].dispatcher.breakers.state("up/gpt-4o") == "closed"
    assert gw.app[GATEWAY].transports["up"].gate.busy == 0
