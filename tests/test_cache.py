"""The response cache: keys, isolation, what is stored, and replay in both forms."""

from __future__ import annotations

import copy

import openai
import orjson
import pytest
from openai import AsyncOpenAI

from policies.cache import MemoryCacheStore, ResponseCache, cache_control, cache_key
from policies.cache_replay import assemble, stream_chunks
from proxy.server.configure import parse_config
from proxy.config.reader import Problems
from proxy.config.telemetry import CacheConfig, parse_cache
from proxy.core.exchange import Exchange
from tests.fakes.openai_upstream import API_KEY, Reply

USER = [{"role": "user", "content": "Say hello"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
BASE = {"model": "gpt", "messages": USER}
# Each variation must give a different key from BASE and from every other one.
VARIATIONS = [
    {"messages": [{"role": "user", "content": "Say hello!"}]},
    {"temperature": 0}, {"temperature": 0.5}, {"top_p": 0.9}, {"max_tokens": 5},
    {"max_completion_tokens": 5}, {"stop": ["\n"]}, {"stop": "\n"}, {"n": 2}, {"seed": 1},
    {"frequency_penalty": 0.5}, {"presence_penalty": 0.5}, {"logit_bias": {"50256": -100}},
    {"response_format": {"type": "json_object"}}, {"tools": TOOLS}, {"tool_choice": "none"},
    {"parallel_tool_calls": False}, {"reasoning_effort": "low"},
    {"reasoning": {"effort": "high"}}, {"logprobs": True}, {"top_logprobs": 2},
    {"modalities": ["text"]}, {"prediction": {"type": "content", "content": "x"}},
]

CONFIG = parse_config("""
providers: {offline: {type: mock}}
models:
  gpt: {targets: [{provider: offline, model: echo}]}
  other: {targets: [{provider: offline, model: echo}]}
  other-target: {targets: [{provider: offline, model: echo-2}]}
""", {})


class _Http:
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = headers or {}


def exchange(body: dict, key: str | None = "tenant-a", model: str = "gpt",
             headers: dict[str, str] | None = None) -> Exchange:
    ex = Exchange(request_id="req_1", http=_Http(headers), body=body,
                  model=CONFIG.models[model], stream=bool(body.get("stream")))
    ex.key_name = key
    return ex


def test_every_parameter_changes_the_key():
    keys = {cache_key(exchange(BASE), "key")}
    for change in VARIATIONS:
        keys.add(cache_key(exchange({**BASE, **change}), "key"))
    assert len(keys) == len(VARIATIONS) + 1


def test_model_targets_scope_and_version_are_in_the_key(monkeypatch):
    base = cache_key(exchange(BASE), "key")
    assert cache_key(exchange(BASE, model="other"), "key") != base
    assert cache_key(exchange(BASE, model="other-target"), "key") \
        != cache_key(exchange(BASE, model="other"), "key")
    assert cache_key(exchange(BASE, key="tenant-b"), "key") != base
    assert cache_key(exchange(BASE, key=None), "key") != base
    # global scope: tenants share; scope itself is part of the key
    assert cache_key(exchange(BASE, key="tenant-b"), "global") \
        == cache_key(exchange(BASE), "global") != base
    monkeypatch.setattr("policies.cache.FORMAT_VERSION", 2)
    assert cache_key(exchange(BASE), "key") != base


def test_transport_fields_do_not_change_the_key():
    base = cache_key(exchange(BASE), "key")
    for change in ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}},
                   {"user": "u-42"}, {"metadata": {"a": "b"}}, {"store": False}):
        assert cache_key(exchange({**BASE, **change}), "key") == base
    reordered = {"messages": USER, "temperature": 0, "model": "gpt"}
    assert cache_key(exchange(reordered), "key") == \
        cache_key(exchange({**BASE, "temperature": 0}), "key")


def test_cache_control():
    assert cache_control(None) == (True, True)
    assert cache_control("no-cache") == (False, True)
    assert cache_control("max-age=0, No-Store") == (False, False)


def test_config_switches():
    problems = Problems()
    off = parse_cache(None, "policies.cache", problems, {"gpt": True})
    assert not off.enabled and off.for_model("gpt") and not off.for_model("other")
    on = parse_cache({"ttl": "2m", "max_entries": 5, "scope": "global"}, "policies.cache",
                     problems, {"other": False})
    assert (on.enabled, on.ttl, on.max_entries, on.scope) == (True, 120.0, 5, "global")
    assert on.for_model("gpt") and not on.for_model("other")
    assert not problems
    parse_cache({"scope": "tenant"}, "policies.cache", problems, {})
    assert problems == ["policies.cache.scope: must be one of key, global; got 'tenant'"]
    with pytest.raises(Exception) as info:
        parse_config("""
            providers: {offline: {type: mock}}
            models: {gpt: {cache: maybe, targets: [{provider: offline, model: echo}]}}
        """, {})
    assert "models.gpt.cache: must be true or false, got 'maybe'" in str(info.value)


async def test_tenant_isolation_and_global_scope():
    calls = []

    async def upstream(ex: Exchange) -> None:
        calls.append(ex.key_name)
        ex.status = 200
        ex.response_body = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1,
                                         "model": "echo", "choices": [{
                                             "index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant",
                                                         "content": f"for {ex.key_name}"}}]})

    cache = ResponseCache(CacheConfig(enabled=True))
    for key in ("tenant-a", "tenant-b", "tenant-a", "tenant-b"):
        await cache(exchange(dict(BASE), key=key), upstream)
    assert calls == ["tenant-a", "tenant-b"]  # each tenant filled its own entry once
    ex = exchange(dict(BASE), key="tenant-b")
    await cache(ex, upstream)
    assert orjson.loads(ex.response_body)["choices"][0]["message"]["content"] == "for tenant-b"
    shared = ResponseCache(CacheConfig(enabled=True, scope="global"))
    for key in ("tenant-a", "tenant-b"):
        await shared(exchange(dict(BASE), key=key), upstream)
    assert calls == ["tenant-a", "tenant-b", "tenant-a"]


async def test_memory_store_is_lru_and_bounded():
    store = MemoryCacheStore(ttl=60, max_entries=2)
    for k in "abc":
        store.set(k, k)  # type: ignore[arg-type]
    assert store.get("a") is None and store.get("c") == "c" and len(store) == 2


def test_stream_chunks_assemble_round_trip():
    completion = {"id": "c1", "object": "chat.completion", "created": 5, "model": "m",
                  "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls",
                               "message": {"role": "assistant", "content": None,
                                           "refusal": None, "tool_calls": [
                                               {"id": "call_1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}},
                                               {"id": "call_2", "type": "function",
                                                "function": {"name": "g",
                                                             "arguments": '{"a":1}'}}]}},
                              {"index": 1, "logprobs": None, "finish_reason": "length",
                               "message": {"role": "assistant", "content": "hi",
                                           "refusal": None}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    chunks = stream_chunks(completion, include_usage=True)
    parsed = [orjson.loads(c) for c in chunks]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": None,
                                                "refusal": None}
    assert [c["choices"][0]["delta"]["tool_calls"][0]["index"] for c in parsed[1:3]] == [0, 1]
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["total_tokens"] == 3
    assert all(c["usage"] is None for c in parsed[:-1])
    assert assemble(chunks, None) == completion
    assert "usage" not in orjson.loads(stream_chunks(completion, include_usage=False)[0])
    unfinished = [c for c in chunks if b'"finish_reason":"length"' not in c]
    assert assemble(unfinished, None) is None


# --- end to end: openai SDK → gatewise → the fake OpenAI ------------------------------

@pytest.fixture
async def client(fake, start_gateway):
    gw = await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: "{API_KEY}"}}
        models:
          gpt: {{targets: [{{provider: up, model: gpt-4o}}]}}
          nocache: {{cache: false, targets: [{{provider: up, model: gpt-4o}}]}}
        policies:
          cache: {{ttl: 5m, max_entries: 100}}
          timeouts: {{first_token: 2s, idle: 2s}}
          retry: {{attempts: 0}}
    """)
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="client", max_retries=0) as c:
        yield c


async def _create(client, **kwargs):
    raw = await client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "gpt"), messages=kwargs.pop("messages", USER), **kwargs)
    return raw.headers.get("x-gatewise-cache"), raw.parse()


async def _stream(client, **kwargs):
    cache, stream = await _create(client, stream=True, **kwargs)
    return cache, [chunk async for chunk in stream]


async def test_json_fill_then_stream_hit(client, fake):
    fake.script(Reply(text="Hello from upstream."))
    cache, first = await _create(client)
    assert cache == "MISS" and first.choices[0].message.content == "Hello from upstream."
    cache, chunks = await _stream(client, stream_options={"include_usage": True})
    assert cache == "HIT" and len(fake.requests) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == "Hello from upstream."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == first.usage.total_tokens
    assert {c.id for c in chunks} == {first.id}
    cache, plain = await _stream(client)  # no include_usage: no usage chunk
    assert cache == "HIT" and all(c.choices and c.usage is None for c in plain)
    cache, again = await _create(client)
    assert cache == "HIT" and again.model_dump() == first.model_dump()


async def test_stream_fill_then_json_hit_with_tool_calls(client, fake):
    fake.script(Reply(tool_calls=[{"id": "call_a", "name": "get_weather",
                                   "arguments": '{"city": "Paris, France"}'},
                                  {"id": "call_b", "name": "get_weather",
                                   "arguments": '{"city": "Oslo"}'}]))
    cache, _ = await _stream(client, tools=TOOLS)
    assert cache == "MISS"
    cache, reply = await _create(client, tools=TOOLS)
    assert cache == "HIT" and len(fake.requests) == 1
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris, France"}'),
        ("call_b", "get_weather", '{"city": "Oslo"}')]
    assert reply.usage.completion_tokens > 0  # from the stream's own usage
    cache, replayed = await _stream(client, tools=TOOLS)
    assert cache == "HIT"
    calls = [tc for c in replayed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.id, tc.function.arguments) for tc in calls] == [
        (0, "call_a", '{"city": "Paris, France"}'), (1, "call_b", '{"city": "Oslo"}')]


async def test_errors_are_not_cached(client, fake):
    fake.script(Reply(status=500))
    with pytest.raises(openai.InternalServerError):
        await _create(client)
    cache, _ = await _create(client)
    assert cache == "MISS" and len(fake.requests) == 2
    cache, _ = await _create(client)
    assert cache == "HIT" and len(fake.requests) == 2


async def test_truncated_stream_is_not_cached(client, fake):
    fake.script(Reply(text="one two three four five six", drop_after=3))
    with pytest.raises(openai.APIError):
        await _stream(client)
    cache, _ = await _stream(client)
    assert cache == "MISS" and len(fake.requests) == 2
    cache, _ = await _stream(client)
    assert cache == "HIT" and len(fake.requests) == 2


async def test_no_cache_and_no_store(client, fake):
    fake.script(Reply(text="first"), Reply(text="second"), Reply(text="third"))
    assert (await _create(client))[0] == "MISS"
    cache, reply = await _create(client, extra_headers={"Cache-Control": "no-cache"})
    assert cache == "MISS" and reply.choices[0].message.content == "second"
    cache, reply = await _create(client)  # no-cache still stored its answer
    assert cache == "HIT" and reply.choices[0].message.content == "second"
    other = [{"role": "user", "content": "Something else"}]
    cache, reply = await _create(client, messages=other,
                                 extra_headers={"Cache-Control": "no-store"})
    assert cache == "MISS" and reply.choices[0].message.content == "third"
    cache, reply = await _create(client, messages=other)  # no-store stored nothing
    assert cache == "MISS" and len(fake.requests) == 4


async def test_model_switched_off(client, fake):
    for _ in range(2):
        cache, _ = await _create(client, model="nocache")
        assert cache is None
    assert len(fake.requests) == 2


async def test_cache_absent_when_off(start_gateway):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    from proxy.server.gateway import GATEWAY
    gateway = gw.app[GATEWAY]
    assert gateway.cache is None
    assert not any(isinstance(p, ResponseCache) for p in gateway.policies)


def test_assemble_refuses_error_chunks():
    good = stream_chunks({"id": "a", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                          "content": "x"}}]}, False)
    assert assemble(copy.copy(good), None) is not None
    assert assemble(good[:2] + [b'{"error": {"message": "boom"}}'] + good[2:], None) is None
