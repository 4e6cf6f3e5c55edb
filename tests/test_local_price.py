"""Local targets (ollama, mock) cost $0 unless the config prices them."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.server.configure import parse_config
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.server import LoopbackServer


@pytest.fixture
async def upstreams():
    openai, ollama = FakeOpenAI(), FakeOllama()
    async with LoopbackServer(openai.app) as a, LoopbackServer(ollama.app) as b:
        yield f"""
        providers:
          cloud: {{type: openai, base_url: "{a.url}/v1", api_key: {API_KEY}}}
          local: {{type: ollama, base_url: "{b.url}"}}
        """


async def ask(http: aiohttp.ClientSession, url: str, model: str) -> aiohttp.ClientResponse:
    async with http.post(url + "/v1/chat/completions", json={
            "model": model, "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}) as resp:
        await resp.read()
        return resp


async def test_cheapest_puts_an_unpriced_local_target_first(upstreams, start_gateway):
    gw = await start_gateway(upstreams + """
        models:
          m:
            strategy: cheapest
            targets: [{provider: cloud, model: gpt-4o-mini}, {provider: local, model: llama3.2}]
    """)
    async with aiohttp.ClientSession() as http:
        resp = await ask(http, gw.url, "m")
    assert resp.status == 200
    assert resp.headers["x-gatewise-target"] == "local/llama3.2"
    assert resp.headers["x-gatewise-cost"] == "0.00000000"


async def test_local_only_at_routes_to_the_local_target(upstreams, start_gateway):
    gw = await start_gateway(upstreams + """
        models:
          m:
            targets:
              - {provider: cloud, model: gpt-4o, price: {input: 1, output: 1}}
              - {provider: local, model: llama3.2}
        policies:
          budgets: {global: {usd: 0.0001, per: day, local_only_at: 1%}}
    """)
    async with aiohttp.ClientSession() as http:
        first = await ask(http, gw.url, "m")  # priority: the cloud, ~20 % of the budget
        second = await ask(http, gw.url, "m")  # past 1 %: local targets only
    assert first.status == 200 and first.headers["x-gatewise-target"] == "cloud/gpt-4o"
    assert second.status == 200, "no free target: 'it has no targets'"
    assert second.headers["x-gatewise-target"] == "local/llama3.2"


def test_a_priced_local_target_keeps_its_price_and_clouds_stay_unknown():
    config = parse_config("""
        providers:
          local: {type: ollama}
          cloud: {type: openai, api_key: k}
        models:
          paid: {targets: [{provider: local, model: llama3.2, price: {input: 2, output: 4}}]}
          free: {targets: [{provider: local, model: gpt-4o, capabilities: [], context_window: 8192}]}
          unknown: {targets: [{provider: cloud, model: some-new-model}]}
    """, {})
    paid = config.models["paid"].targets[0].info
    assert (paid.input, paid.output) == (2, 4)
    free = config.models["free"].targets[0].info  # the table's gpt-4o price is a cloud's
    assert free.priced and (free.input, free.output) == (0, 0)
    assert free.capabilities == frozenset() and free.context_window == 8192  # kept
    assert not config.models["unknown"].targets[0].info.priced  # not "free"
