"""End to end: the real `openai` SDK → gatewise → the faithful fake Anthropic API."""

import base64

import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, Reply
from tests.fakes.server import LoopbackServer

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture
async def fake():
    fake = FakeAnthropic()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def client(fake, start_gateway):
    backup = FakeAnthropic()
    fake.backup = backup
    async with LoopbackServer(backup.app) as second:
        gw = await start_gateway(f"""
            providers:
              anthropic: {{type: anthropic, base_url: "{fake.url}", api_key: {API_KEY}}}
              backup: {{type: anthropic, base_url: "{second.url}", api_key: {API_KEY}}}
            models:
              claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
              claude-lax:
                drop_unsupported: true
                targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]
              claude-ha:
                targets: [{{provider: anthropic, model: claude-sonnet-4-5}},
                          {{provider: backup, model: claude-haiku-4-5}}]
        """)
        yield openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)


async def test_multi_turn_tool_use(fake, client):
    fake.script(Reply(text="Let me check.", tool_calls=[
        {"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]),
        Reply(text="It is sunny in Paris."))
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(model="claude", messages=messages,
                                                 tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "toolu_01", "get_weather", '{"city":"Paris"}')
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"}]
    second = await client.chat.completions.create(model="claude", messages=messages,
                                                  tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    sent = fake.last
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 24C"}]
    assert sent["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert fake.requests[-1].headers["x-api-key"] == API_KEY
    assert second.usage.prompt_tokens > 0 and second.usage.total_tokens == (
        second.usage.prompt_tokens + second.usage.completion_tokens)


async def test_parallel_tool_calls_streamed_and_reassembled(fake, client):
    fake.script(Reply(text="Checking both.", split=11, tool_calls=[
        {"name": "get_weather", "input": {"city": "Paris"}},
        {"name": "get_weather", "input": {"city": "Tokyo, Japan"}}]))
    async with client.chat.completions.stream(
            model="claude", tools=TOOLS, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Paris and Tokyo?"}]) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls
    assert [c.function.arguments for c in calls] == ['{"city":"Paris"}',
                                                     '{"city":"Tokyo, Japan"}']
    assert all(c.id.startswith("toolu_") for c in calls) and calls[0].id != calls[1].id
    assert final.usage.completion_tokens > 0


async def test_raw_stream_grammar(fake, client):
    fake.script(Reply(text="a b", tool_calls=[{"name": "get_weather", "input": {}}]))
    stream = await client.chat.completions.create(
        model="claude", tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": "x"}])
    chunks = [c async for c in stream]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert all(c.usage is None for c in chunks)  # not asked for
    tool_deltas = [c.choices[0].delta.tool_calls[0] for c in chunks
                   if c.choices[0].delta.tool_calls]
    assert tool_deltas[0].index == 0 and tool_deltas[0].id and tool_deltas[0].type == "function"
    assert all(d.id is None and d.function.name is None for d in tool_deltas[1:])


async def test_images_and_stop_sequences(fake, client):
    fake.script(Reply(text="I see a cat. END more text"))
    reply = await client.chat.completions.create(model="claude", stop="END", messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert reply.choices[0].message.content == "I see a cat. "
    assert reply.choices[0].finish_reason == "stop"
    blocks = fake.last["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png",
                                   "data": PNG.split(",", 1)[1]}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert fake.last["stop_sequences"] == ["END"]


async def test_bad_image_type_is_400_naming_the_part(client):
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}])
    assert info.value.body["param"] == "messages[0].content[0].image_url.url"


async def test_thinking_as_reasoning_content(fake, client):
    fake.script(Reply(text="42", thinking="six times seven"),
                Reply(text="42", thinking="six times seven"))
    body = {"model": "claude", "reasoning_effort": "low",
            "messages": [{"role": "user", "content": "6*7?"}]}
    reply = await client.chat.completions.create(**body)
    assert reply.choices[0].message.model_extra["reasoning_content"] == "six times seven"
    assert fake.last["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert fake.last["max_tokens"] == 4096 + 2048
    stream = await client.chat.completions.create(**body, stream=True)
    reasoning = [c.choices[0].delta.model_extra.get("reasoning_content") async for c in stream
                 if c.choices]
    assert "".join(r for r in reasoning if r) == "six times seven"


async def test_unsupported_parameter_is_400_unless_dropped(fake, client):
    for param, value in (("n", 2), ("seed", 1), ("temperature", 1.5), ("logprobs", True)):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "x"}], **{param: value})
        assert info.value.body["param"] == param
    reply = await client.chat.completions.create(
        model="claude-lax", seed=1, temperature=1.5, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    assert "temperature" not in fake.last and "seed" not in fake.last


@pytest.mark.parametrize("reply,exc,status,code", [
    (Reply(status=429, headers={"retry-after": "7"}), openai.RateLimitError, 429,
     "upstream_rate_limit"),
    (Reply(status=529), openai.InternalServerError, 503, "upstream_overloaded"),
    (Reply(status=500, error_type="api_error"), openai.InternalServerError, 502,
     "upstream_error"),
    (Reply(status=401, error_type="authentication_error"), openai.InternalServerError, 502,
     "upstream_auth_error"),
    (Reply(status=403, error_type="permission_error"), openai.InternalServerError, 502,
     "upstream_auth_error"),
    (Reply(status=400, message="prompt is too long: 208656 tokens > 200000 maximum"),
     openai.BadRequestError, 400, "context_length_exceeded"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_error_classes(fake, client, reply, exc, status, code, stream):
    fake.script(reply)
    with pytest.raises(exc) as info:
        result = await client.chat.completions.create(
            model="claude", stream=stream, messages=[{"role": "user", "content": "x"}])
        async for _ in result:
            pass
    assert info.value.status_code == status
    assert info.value.body["code"] == code
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
    assert API_KEY not in info.value.response.text


async def test_stream_failing_mid_way(fake, client, start_gateway):
    fake.script(Reply(text="one two three four", error_after=5, error_delay=0.05))
    stream = await client.chat.completions.create(
        model="claude", stream=True, messages=[{"role": "user", "content": "x"}])
    seen = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert "".join(s for s in seen if s) == "one two "
    assert "Overloaded" in str(info.value)


async def test_stream_failing_mid_way_raw_bytes(fake, client):
    import aiohttp
    fake.script(Reply(text="one two three four", error_after=5, error_delay=0.05))
    url = str(client.base_url) + "chat/completions"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"model": "claude", "stream": True, "messages": [
                {"role": "user", "content": "x"}]}) as resp:
            assert resp.status == 200
            raw = await resp.read()
    assert raw.endswith(b'data: {"error":{"message":"Overloaded","type":"server_error",'
                        b'"param":null,"code":"upstream_overloaded"}}\n\n')
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw


async def test_error_event_before_content_falls_back(fake, client):
    fake.script(Reply(text="never", error_after=2))  # after message_start and ping
    fake.backup.script(Reply(text="from the backup"))
    stream = await client.chat.completions.create(
        model="claude-ha", stream=True, messages=[{"role": "user", "content": "x"}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "from the backup"
    assert stream.response.headers["x-gatewise-target"] == "backup/claude-haiku-4-5"


async def test_error_event_before_content_is_an_http_error(fake, client):
    fake.script(Reply(text="never", error_after=2))
    with pytest.raises(openai.InternalServerError) as info:
        stream = await client.chat.completions.create(
            model="claude", stream=True, messages=[{"role": "user", "content": "x"}])
        async for _ in stream:
            pass
    assert info.value.status_code == 503
