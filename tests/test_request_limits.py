"""Odd input is a 400 that names the limit, on every endpoint: nesting depth (checked
once, at parse), `n`, and the number of tools. Never a 500 from deep inside a
translator, the cache key or the prompt estimate."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.server import LoopbackServer

USER = [{"role": "user", "content": "hi"}]


DEEP = "__deep__"


def nested(depth: int) -> object:
    """A JSON value `depth` levels deep (objects and arrays alternating)."""
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def encode(body: dict, depth: int = 0) -> bytes:
    """`body` as JSON with the deep value spliced in as text (orjson itself stops
    encoding at 254 levels, which is part of what this guards against)."""
    deep = b"".join(b'{"a":' if i % 2 == 0 else b"[" for i in range(depth)) + b"1" + b"".join(
        b"}" if i % 2 == 0 else b"]" for i in reversed(range(depth)))
    return orjson.dumps(body).replace(f'"{DEEP}"'.encode(), deep)


@pytest.fixture
async def gw(start_gateway):
    openai_fake, anthropic_fake = FakeOpenAI(), FakeAnthropic()
    async with LoopbackServer(openai_fake.app) as one, LoopbackServer(anthropic_fake.app) as two:
        yield await start_gateway(f"""
            providers:
              up: {{type: openai, base_url: "{one.url}/v1", api_key: {API_KEY}}}
              claude: {{type: anthropic, base_url: "{two.url}", api_key: {anthropic_fake.api_key}}}
              offline: {{type: mock}}
            models:
              gpt-4o: {{targets: [{{provider: up, model: gpt-4o}}]}}
              claude: {{targets: [{{provider: claude, model: claude-sonnet-4-5}}]}}
              echo: {{targets: [{{provider: offline, model: echo}}]}}
              gpt-3.5-turbo-instruct: {{targets: [{{provider: up, model: gpt-3.5-turbo-instruct}}]}}
              embed: {{targets: [{{provider: up, model: text-embedding-3-small}}]}}
            policies: {{cache: {{ttl: 5m}}}}
            keys: [{{name: k, key: sk-gw-limits-0123456789abcdef, tpm: 100000000,
                    budget: {{usd: 1000}}}}]
        """)


async def post(gw, path: str, body: dict, depth: int = 0) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + path, data=encode(body, depth), headers={
                "authorization": "Bearer sk-gw-limits-0123456789abcdef",
                "content-type": "application/json"}) as resp:
        return resp.status, orjson.loads(await resp.read())


def deep_bodies() -> list[tuple[str, dict]]:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": DEEP}}}}
    return [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": USER, "tools": [tool]}),
        ("/v1/chat/completions", {"model": "claude", "messages": USER, "tools": [tool]}),
        ("/v1/chat/completions", {"model": "echo", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "x": DEEP}]}]}),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": USER, "metadata": DEEP}),
        ("/v1/chat/completions", {"model": "claude", "messages": USER,
                                  "response_format": {"type": "json_schema", "json_schema": {
                                      "name": "x", "schema": {"type": "object", "x": DEEP}}}}),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi",
                             "logit_bias": DEEP}),
        ("/v1/embeddings", {"model": "embed", "input": "hi", "user": DEEP}),
    ]


@pytest.mark.parametrize("depth", [70, 253, 254, 600, 1020])
async def test_deep_json_is_a_400_naming_the_limit_on_every_endpoint(gw, depth):
    for path, body in deep_bodies():
        status, payload = await post(gw, path, body, depth)
        assert status == 400, (path, depth, payload)
        assert "server.max_json_depth" in payload["error"]["message"]
        assert payload["error"]["code"] == "json_too_deep"


async def test_depth_at_the_limit_is_served(gw):
    # the body itself is level 1; messages, the message and content add three more
    status, payload = await post(gw, "/v1/chat/completions", {
        "model": "echo", "messages": [{"role": "user", "content": "hi", "x": DEEP}]}, 60)
    assert status == 200, payload


@pytest.mark.parametrize("n, status, code", [
    (128, 200, None), (129, 400, "integer_above_max_value"), (10**9, 400, "integer_above_max_value"),
    (0, 400, "integer_below_min_value"), ("2", 400, "invalid_type"), (True, 400, "invalid_type"),
    (1.5, 400, "invalid_type")])
async def test_n_is_capped(gw, n, status, code):
    got, payload = await post(gw, "/v1/chat/completions",
                              {"model": "echo", "messages": USER, "n": n, "max_tokens": 1})
    assert got == status, payload
    if code:
        assert payload["error"]["param"] == "n" and payload["error"]["code"] == code
    got, payload = await post(gw, "/v1/completions",
                              {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "n": n})
    if code:
        assert got == 400 and payload["error"]["param"] == "n"


async def test_tools_are_capped(gw):
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {
        "type": "object", "properties": {}}}} for i in range(129)]
    status, payload = await post(gw, "/v1/chat/completions",
                                 {"model": "gpt-4o", "messages": USER, "tools": tools})
    assert status == 400 and payload["error"]["param"] == "tools"
    assert "maximum length 128" in payload["error"]["message"]
    assert "server.max_tools" in payload["error"]["message"]
    status, _ = await post(gw, "/v1/chat/completions",
                           {"model": "gpt-4o", "messages": USER, "tools": tools[:128]})
    assert status == 200


async def test_caps_are_configurable(start_gateway):
    gw = await start_gateway("""
        server: {max_json_depth: 8, max_n: 2, max_tools: 1}
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    async with aiohttp.ClientSession() as http:
        for body, param in (({"n": 3}, "n"), ({"tools": [{}, {}]}, "tools"),
                            ({"metadata": nested(8)}, None)):
            async with http.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "echo", "messages": USER, **body}) as resp:
                payload = await resp.json()
                assert resp.status == 400 and payload["error"]["param"] == param, payload
        assert "at most 8 levels" in payload["error"]["message"]


async def test_tools_are_capped_on_the_messages_and_responses_apis(start_gateway):
    gw = await start_gateway("""
        server: {max_tools: 2}
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    anthropic_tools = [{"name": f"f{i}", "input_schema": {"type": "object"}} for i in range(3)]
    responses_tools = [{"type": "function", "name": f"f{i}", "parameters": {"type": "object"}}
                       for i in range(3)]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/messages", json={
                "model": "echo", "max_tokens": 5, "tools": anthropic_tools,
                "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 400 and "server.max_tools" in await resp.text()
        async with http.post(f"{gw.url}/v1/responses", json={
                "model": "echo", "input": "hi", "tools": responses_tools}) as resp:
            assert resp.status == 400 and "server.max_tools" in await resp.text()
        async with http.post(f"{gw.url}/v1/responses", json={
                "model": "echo", "input": "hi", "tools": responses_tools[:2]}) as resp:
            assert resp.status == 200
