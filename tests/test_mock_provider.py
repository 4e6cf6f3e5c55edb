"""The offline provider (`type: mock`): deterministic, plausible, streamed in pieces."""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest
from openai import AsyncOpenAI

from proxy.engine.mock_upstream import count_tokens

CONFIG = """
    providers:
      offline: {type: mock}
      slow: {type: mock, latency_ms: 200, chunk_delay_ms: 30}
    models:
      echo: {targets: [{provider: offline, model: echo-1}]}
      slow-echo: {targets: [{provider: slow, model: echo-1}]}
"""


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway(CONFIG)


@pytest.fixture
async def client(gw):
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def say(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": text}]


async def test_echoes_the_last_user_message(client):
    reply = await client.chat.completions.create(model="echo", messages=say("hello mock world"))
    assert reply.choices[0].message.content == "hello mock world"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.model == "echo-1"


async def test_text_parts_are_echoed(client):
    reply = await client.chat.completions.create(model="echo", messages=[{
        "role": "user", "content": [{"type": "text", "text": "part one"},
                                    {"type": "text", "text": "part two"}]}])
    assert reply.choices[0].message.content == "part one part two"


async def test_deterministic(gw):
    body = {"model": "echo", "messages": say("same input, same output")}
    answers = []
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(f"{gw.url}/v1/chat/completions", json=body) as resp:
                answers.append(orjson.loads(await resp.read()))
    first, second = answers
    assert first["id"] == second["id"] and first["id"].startswith("chatcmpl-")
    assert first["choices"] == second["choices"] and first["usage"] == second["usage"]


async def test_token_counts_are_plausible(client):
    text = "The quick brown fox jumps over the lazy dog"
    reply = await client.chat.completions.create(model="echo", messages=say(text))
    usage = reply.usage
    pieces = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog"]
    assert usage.completion_tokens == sum(count_tokens(p) for p in pieces) == 14
    # 3 per request + (4 + about len/4) per message, like OpenAI's own accounting
    contents = ["Be brief.", "first", "ok", text]
    assert usage.prompt_tokens == 3 + sum(4 + count_tokens(c) for c in contents)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_count_tokens():
    assert [count_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_gives_finish_reason_length(client, field):
    reply = await client.chat.completions.create(
        model="echo", messages=say("one two three four five six"), **{field: 3})
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "one two "  # "three " would make 4
    assert reply.usage.completion_tokens == 2


async def test_max_tokens_not_reached_is_stop(client):
    reply = await client.chat.completions.create(model="echo", messages=say("short"),
                                                 max_tokens=100)
    assert reply.choices[0].finish_reason == "stop"


async def test_streams_in_several_chunks(client):
    stream = await client.chat.completions.create(
        model="echo", messages=say("alpha beta gamma delta"), stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices
                and c.choices[0].delta.content]
    assert contents == ["alpha ", "beta ", "gamma ", "delta"]
    assert [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1


async def test_stream_truncated_by_max_tokens(client):
    stream = await client.chat.completions.create(
        model="echo", messages=say("one two three four"), stream=True, max_tokens=2)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two "
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


async def test_stream_wire_format(gw):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json={
                "model": "echo", "messages": say("a b"), "stream": True}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-gatewise-target"] == "offline/echo-1"
            raw = await resp.read()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    assert b'"usage"' not in raw  # not asked for
    assert all(e.startswith(b"data: ") for e in raw.split(b"\n\n") if e)


async def test_latency_option(gw):
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        started = time.monotonic()
        reply = await client.chat.completions.create(model="slow-echo", messages=say("hi"))
        assert time.monotonic() - started >= 0.2
        assert reply.choices[0].message.content == "hi"
        started = time.monotonic()
        stream = await client.chat.completions.create(model="slow-echo",
                                                      messages=say("a b c"), stream=True)
        stamps = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.monotonic())
    assert stamps[0] - started >= 0.2
    # chunk_delay_ms between the three words; measured from the start, since a busy
    # client may read the first chunk late and the next ones at once
    assert stamps[-1] - started >= 0.2 + 2 * 0.03


async def test_mock_options_validated(start_gateway):
    from proxy.config.load import ConfigError
    with pytest.raises(ConfigError) as info:
        await start_gateway("""
            providers: {offline: {type: mock, latency_ms: soon}}
            models: {echo: {targets: [{provider: offline, model: echo}]}}
        """)
    assert info.value.problems == ["providers.offline.latency_ms: must be a number >= 0, "
                                   "got 'soon'"]
