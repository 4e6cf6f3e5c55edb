"""End to end: the real openai SDK → gatewise → the faithful fake OpenAI upstream."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_upstream import API_KEY, Reply

USER = [{"role": "user", "content": "Say hello"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def gateway_yaml(fake_url: str) -> str:
    return f"""
        providers:
          up: {{type: openai, base_url: "{fake_url}/v1", api_key: "${{FAKE_OPENAI_KEY}}"}}
          unset: {{type: openai, base_url: "{fake_url}/v1", api_key: "${{UNSET_OPENAI_KEY}}"}}
        models:
          gpt-4o: {{targets: [{{provider: up, model: gpt-4o-2024-08-06}}]}}
          dark: {{targets: [{{provider: unset, model: gpt-4o}}]}}
        policies:
          timeouts: {{first_token: 2s, idle: 2s}}
          retry: {{attempts: 0}}  # one attempt: these tests look at its failure
    """


@pytest.fixture
async def gw(fake, start_gateway):
    return await start_gateway(gateway_yaml(fake.url), env={"FAKE_OPENAI_KEY": API_KEY})


@pytest.fixture
async def client(gw):
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0) as c:
        yield c


async def test_non_streaming(client, fake):
    fake.script(Reply(text="Hi there, friend."))
    reply = await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert reply.choices[0].message.content == "Hi there, friend."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    sent = fake.requests[-1]
    assert sent.body["model"] == "gpt-4o-2024-08-06"  # the target's model, not the alias
    assert sent.body["messages"] == USER
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"  # the gateway's key
    assert "stream_options" not in sent.body


async def test_streaming_text(client, fake):
    fake.script(Reply(text="one two three four"))
    stream = await client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["stop"]
    assert len(chunks) >= 6  # role, four words, finish: relayed, not merged into one
    assert all(c.usage is None for c in chunks)
    assert fake.requests[-1].body["model"] == "gpt-4o-2024-08-06"


async def test_streaming_tool_call_deltas_intact(client, fake):
    calls = [{"id": "call_abc123", "name": "get_weather", "arguments": '{"city": "Paris"}'},
             {"id": "call_def456", "name": "get_weather",
              "arguments": '{"city": "Reykjavik, Iceland"}'}]
    fake.script(Reply(tool_calls=calls))
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=TOOLS, tool_choice="auto", stream=True)
    chunks = [c async for c in stream]
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) > 4  # arguments arrive in fragments, as the upstream sent them
    assembled: dict[int, dict] = {}
    for tc in deltas:
        entry = assembled.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
        if tc.id:
            assert entry["id"] is None  # id/name only on the first delta of each index
            entry["id"], entry["name"] = tc.id, tc.function.name
        entry["arguments"] += tc.function.arguments or ""
    assert [assembled[i] for i in sorted(assembled)] == calls
    assert [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert fake.requests[-1].body["tools"] == TOOLS


async def test_stream_manager_reassembles_tool_calls(client, fake):
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    fake.script(Reply(tool_calls=calls))
    async with client.chat.completions.stream(model="gpt-4o", messages=USER,
                                              tools=TOOLS) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "get_weather", '{"city": "Oslo"}')


async def test_include_usage_honoured(client, fake):
    fake.script(Reply(text="counted words", usage={"prompt_tokens": 11,
                                                   "completion_tokens": 3, "total_tokens": 14}))
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 3)
    assert all(c.usage is None for c in chunks[:-1])
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_no_usage_chunk_unless_asked(gw, fake):
    """gatewise always asks the upstream for usage, but a client that did not ask
    sees no usage chunk and no `usage` keys at all, byte for byte."""
    fake.script(Reply(text="nothing counted here"))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json={
                "model": "gpt-4o", "messages": USER, "stream": True}) as resp:
            assert resp.status == 200
            raw = await resp.read()
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    for event in events[:-1]:
        chunk = orjson.loads(event.removeprefix(b"data: "))
        assert "usage" not in chunk
        assert chunk["choices"]  # no `choices: []` usage chunk
    assert b"usage" not in raw


async def test_raw_response_carries_request_id(client, gw):
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-gatewise-target"] == "up/gpt-4o-2024-08-06"
    assert float(raw.headers["x-gatewise-overhead-ms"]) >= 0
    assert raw.parse().choices[0].message.content
    given = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=USER, extra_headers={"x-request-id": "my-trace-42"})
    assert given.headers["x-request-id"] == "my-trace-42"


async def test_upstream_400_is_bad_request(client, fake):
    fake.script(Reply(status=400, body={
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}))
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length" in info.value.message


async def test_upstream_429_is_rate_limit_with_retry_after(client, fake):
    fake.script(Reply(status=429, headers={"retry-after": "7"}, body={
        "message": "Rate limit reached for gpt-4o.", "type": "requests",
        "param": None, "code": "rate_limit_exceeded"}))
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"


async def test_upstream_500_is_internal_server_error(client, fake):
    fake.script(Reply(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.status_code == 500


async def test_upstream_401_is_502_without_the_key(fake, start_gateway):
    secret = "sk-test-SECRET123456789"
    wrong = "sk-wrong-PLANTED987654321"
    gw = await start_gateway(gateway_yaml(fake.url), env={"FAKE_OPENAI_KEY": wrong})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             json={"model": "gpt-4o", "messages": USER}) as resp:
            raw = await resp.read()
            status = resp.status
    assert status == 502
    error = orjson.loads(raw)["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_auth_error"
    assert "credentials" in error["message"]
    assert wrong not in raw.decode() and secret not in raw.decode()
    assert "6789" not in raw.decode() and "4321" not in raw.decode()  # not even masked
    assert fake.requests[-1].headers["authorization"] == f"Bearer {wrong}"
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=USER)
        assert info.value.status_code == 502


async def test_disabled_provider_answers_503_naming_the_variable(client, fake):
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="dark", messages=USER)
    assert info.value.status_code == 503
    assert "UNSET_OPENAI_KEY" in info.value.message
    assert fake.requests == []


async def test_client_auth_header_is_not_forwarded(gw, fake):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             headers={"authorization": "Bearer client-own-key",
                                      "x-custom": "nope"},
                             json={"model": "gpt-4o", "messages": USER}) as resp:
            assert resp.status == 200
    sent = fake.requests[-1].headers
    assert sent["authorization"] == f"Bearer {API_KEY}"
    assert "x-custom" not in sent


async def test_non_streaming_tool_calls_and_n(client, fake):
    calls = [{"id": "call_9", "name": "get_weather", "arguments": '{"city": "Rome"}'}]
    fake.script(Reply(tool_calls=calls))
    reply = await client.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS,
                                                 n=2)
    assert len(reply.choices) == 2
    assert reply.choices[1].message.tool_calls[0].function.arguments == '{"city": "Rome"}'
    assert reply.choices[0].finish_reason == "tool_calls"
    assert fake.requests[-1].body["n"] == 2


async def test_fake_rejects_what_openai_rejects(gw, fake):
    """The fake's validation errors pass through gatewise with the upstream's status."""
    cases = [
        ({"model": "gpt-4o", "messages": USER, "frobnicate": 1},
         "Unrecognized request argument supplied: frobnicate"),
        ({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]},
         "Invalid value: 'wizard'"),
        ({"model": "gpt-4o", "messages": [*USER, {"role": "tool", "content": "x"}]},
         "messages[1].tool_call_id"),
        ({"model": "gpt-4o", "messages": USER, "tool_choice": "auto"}, "tool_choice"),
        ({"model": "gpt-4o", "messages": USER, "n": 0}, "integer below minimum"),
    ]
    async with aiohttp.ClientSession() as http:
        for body, expected in cases:
            async with http.post(f"{gw.url}/v1/chat/completions", json=body) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 400, body
                assert expected in error["message"], (body, error)
                assert error["type"] == "invalid_request_error"


async def test_upstream_error_echoing_the_key_is_redacted(client, fake):
    fake.script(Reply(status=400, body={
        "message": f"Bad request made with key {API_KEY}.", "type": "invalid_request_error",
        "param": None, "code": None}))
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert API_KEY not in info.value.response.text
    assert "[redacted]" in info.value.message


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("chunk_delay", [0.0, 0.01])  # all in one read, or a read each
async def test_committed_stream_passes_upstream_bytes_through(gw, fake, include_usage,
                                                              chunk_delay, monkeypatch):
    """Once a stream is committed, plain content deltas go out as the upstream's own
    bytes (the pass-through fast path); the client's stream is still exactly
    OpenAI's: same chunks, usage only if asked, one [DONE]."""
    from translators.openai import OpenAITranslator

    passed = []
    real = OpenAITranslator.passthrough

    def spy(self, block):
        out, used = real(self, block)
        passed.append(used)
        return out, used

    monkeypatch.setattr(OpenAITranslator, "passthrough", spy)
    fake.script(Reply(text="one two three four five six", chunk_delay=chunk_delay))
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            raw = await resp.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]" and events.count(b"[DONE]") == 1
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three four five six"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert len({c["id"] for c in chunks}) == 1
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        assert all("usage" in c for c in chunks)
    else:
        assert b"usage" not in raw
    assert sum(passed) > 0  # the fast path carried some of it
