"""Ollama (native /api/chat): the mapping tables, and end to end through gatewise with
the real `openai` SDK against the faithful fake Ollama server."""

import base64

import aiohttp
import openai
import orjson
import pytest

from proxy.config.types import ProviderConfig
from proxy.core.errors import ErrorClass, GatewayError
from proxy.core.framing import Event
from tests.fakes.ollama_upstream import FakeOllama, Reply
from tests.fakes.server import LoopbackServer
from translators.ollama import OllamaTranslator, build_body

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
B64 = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PNG = "data:image/png;base64," + B64


def _body(stream=False, keep_alive=None, **chat):
    chat.setdefault("messages", [{"role": "user", "content": "hi"}])
    return build_body(chat, "llama3.2", stream=stream, drop_unsupported=False,
                      keep_alive=keep_alive)


# --- tables --------------------------------------------------------------------------

@pytest.mark.parametrize("param,value,field,expected", [
    ("max_tokens", 10, "num_predict", 10), ("max_completion_tokens", 9, "num_predict", 9),
    ("temperature", 0.3, "temperature", 0.3), ("top_p", 0.9, "top_p", 0.9),
    ("seed", 42, "seed", 42), ("stop", "END", "stop", ["END"]),
    ("stop", ["a", "b"], "stop", ["a", "b"]),
    ("presence_penalty", 1, "presence_penalty", 1),
    ("frequency_penalty", -1, "frequency_penalty", -1)])
def test_options_table(param, value, field, expected):
    assert _body(**{param: value})["options"] == {field: expected}


def test_max_completion_tokens_wins_over_max_tokens():
    assert _body(max_tokens=5, max_completion_tokens=9)["options"] == {"num_predict": 9}


@pytest.mark.parametrize("stream", [True, False])
def test_stream_is_always_explicit(stream):
    assert _body(stream=stream)["stream"] is stream


@pytest.mark.parametrize("fmt,expected", [
    ({"type": "json_object"}, "json"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
     {"type": "object"})])
def test_format_table(fmt, expected):
    assert _body(response_format=fmt)["format"] == expected


@pytest.mark.parametrize("effort,think", [("none", False), ("low", "low"), ("high", "high")])
def test_think_table(effort, think):
    assert _body(reasoning_effort=effort)["think"] == think


@pytest.mark.parametrize("param,value", [
    ("n", 2), ("logprobs", True), ("parallel_tool_calls", False), ("logit_bias", {"1": 1}),
    ("tool_choice", "required")])
def test_unsupported_are_named(param, value):
    with pytest.raises(GatewayError) as err:
        _body(tools=TOOLS, **{param: value})
    assert err.value.status == 400 and err.value.param == param


def test_tool_choice_none_omits_tools_and_keep_alive_from_config():
    body = _body(tools=TOOLS, tool_choice="none", keep_alive="10m")
    assert "tools" not in body and body["keep_alive"] == "10m"
    assert _body(tools=TOOLS)["tools"] == TOOLS


def test_messages_mapping():
    body = _body(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What"},
                                     {"type": "text", "text": "is this?"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}])
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What\nis this?", "images": [B64]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]


def test_bad_inputs():
    with pytest.raises(GatewayError) as err:
        _body(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}])
    assert err.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(GatewayError) as err:
        _body(messages=[{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}])
    assert err.value.param == "messages[0].tool_calls[0].function.arguments"
    with pytest.raises(GatewayError) as err:
        _body(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}])
    assert err.value.param == "messages[0].tool_call_id"


def _translator():
    return OllamaTranslator(ProviderConfig("o", "ollama", "http://x"))


@pytest.mark.parametrize("line,finish", [
    ({"done": True, "done_reason": "stop"}, "stop"),
    ({"done": True, "done_reason": "length"}, "length"),
    ({"done": True, "done_reason": "load"}, "stop"),
    ({"done": True}, "stop")])
def test_done_reason_table(line, finish):
    translator = _translator()
    out, usage = translator.stream(Event(None, orjson.dumps({"model": "m", **line})))
    chunks = [orjson.loads(c) for c in out]
    assert chunks[-1]["choices"][0]["finish_reason"] == finish
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 0)  # omitted counts are 0


@pytest.mark.parametrize("status,message,cls,client_status", [
    (400, "bad", ErrorClass.BAD_REQUEST, 400), (404, 'model "x" not found',
                                                 ErrorClass.NOT_FOUND, 404),
    (429, "too many", ErrorClass.RATE_LIMITED, 429), (500, "boom", ErrorClass.SERVER, 502),
    (502, "bad gateway", ErrorClass.SERVER, 502), (503, "server busy", ErrorClass.OVERLOADED, 503),
    (401, "unauthorized", ErrorClass.AUTH, 502), (403, "forbidden", ErrorClass.AUTH, 502)])
def test_error_table(status, message, cls, client_status):
    err = _translator().error(status, {}, orjson.dumps({"error": message}))
    assert (err.error_class, err.status) == (cls, client_status)


# --- end to end ----------------------------------------------------------------------

@pytest.fixture
async def fake():
    fake = FakeOllama()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def gateway(fake, start_gateway):
    return await start_gateway(f"""
        providers:
          local: {{type: ollama, base_url: "{fake.url}", keep_alive: 5m}}
        models:
          llama: {{targets: [{{provider: local, model: "llama3.2:latest"}}]}}
          qwen: {{targets: [{{provider: local, model: qwen3}}]}}
          gemma: {{targets: [{{provider: local, model: gemma3}}]}}
          ghost: {{targets: [{{provider: local, model: nothere}}]}}
    """)


@pytest.fixture
def client(gateway):
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


async def test_text_non_streaming(fake, client):
    fake.script(Reply(text="Hi there"))
    reply = await client.chat.completions.create(
        model="llama", max_tokens=20, temperature=0.2,
        messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content == "Hi there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 2
    assert fake.last == {"model": "llama3.2:latest", "options": {"num_predict": 20,
                                                                 "temperature": 0.2},
                         "messages": [{"role": "user", "content": "Hello"}],
                         "keep_alive": "5m", "stream": False}


async def test_streaming_with_usage(fake, client):
    fake.script(Reply(text="one two three"))
    stream = await client.chat.completions.create(
        model="llama", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count"}])
    chunks = [c async for c in stream]
    assert fake.last["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1


async def test_raw_stream_is_sse_with_done(gateway, fake):
    fake.script(Reply(text="a b", prompt_cached=True))
    payload = {
        "model": "llama", "stream": True,
        "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + "/v1/chat/completions", json=payload) as resp:
        raw = await resp.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" and b'"usage"' not in raw
    assert orjson.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"


async def test_length_and_images(fake, client):
    fake.script(Reply(text="a b c d"))
    reply = await client.chat.completions.create(model="llama", max_tokens=2, messages=[
        {"role": "user", "content": [{"type": "text", "text": "see"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert reply.choices[0].finish_reason == "length"
    assert fake.last["messages"][0]["images"] == [B64]


@pytest.mark.parametrize("with_ids", [False, True])
async def test_multi_turn_parallel_tool_calls_streamed(fake, client, with_ids):
    fake.script(Reply(text="", with_ids=with_ids, tool_calls=[
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Tokyo"}}]), Reply(text="Both sunny."))
    messages = [{"role": "user", "content": "Paris and Tokyo?"}]
    async with client.chat.completions.stream(model="qwen", messages=messages,
                                              tools=TOOLS) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.arguments for c in calls] == ['{"city":"Paris"}', '{"city":"Tokyo"}']
    assert calls[0].id != calls[1].id and all(c.id.startswith("call_") for c in calls)
    messages += [choice.message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": calls[1].id, "content": "warm"},
                 {"role": "tool", "tool_call_id": calls[0].id, "content": "mild"}]
    second = await client.chat.completions.create(model="qwen", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Both sunny."
    sent = fake.last["messages"]
    assert sent[1]["tool_calls"][1] == {"function": {"name": "get_weather",
                                                     "arguments": {"city": "Tokyo"}}}
    assert [(m["tool_name"], m["content"]) for m in sent[2:]] == [
        ("get_weather", "warm"), ("get_weather", "mild")]


async def test_tool_calls_non_streaming(fake, client):
    fake.script(Reply(text="", tool_calls=[{"name": "get_weather", "arguments": {}}]))
    reply = await client.chat.completions.create(
        model="qwen", tools=TOOLS, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls[0].function.arguments == "{}"


async def test_thinking(fake, client):
    fake.script(Reply(text="42", thinking="Hmm, let me see."))
    reply = await client.chat.completions.create(
        model="qwen", reasoning_effort="high", messages=[{"role": "user", "content": "?"}])
    assert fake.last["think"] == "high"
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Hmm, let me see."
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="llama", reasoning_effort="low",
                                             messages=[{"role": "user", "content": "?"}])
    assert "does not support thinking" in err.value.message


@pytest.mark.parametrize("reply,exc,status", [
    (Reply(status=429, message="too many requests", headers={"retry-after": "2"}),
     openai.RateLimitError, 429),
    (Reply(status=500, message="llama runner process has terminated"),
     openai.InternalServerError, 502),
    (Reply(status=503, message="server busy, please try again."),
     openai.InternalServerError, 503),
    (Reply(status=400, message="invalid options"), openai.BadRequestError, 400)])
async def test_error_bodies(fake, client, reply, exc, status):
    fake.script(reply)
    with pytest.raises(exc) as err:
        await client.chat.completions.create(model="llama",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == status and err.value.body["message"] == reply.message


async def test_model_missing_and_no_tools(client):
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="ghost",
                                             messages=[{"role": "user", "content": "x"}])
    assert "not found" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="gemma", tools=TOOLS,
                                             messages=[{"role": "user", "content": "x"}])
    assert "does not support tools" in err.value.message


async def test_mid_stream_error_line(fake, client):
    fake.script(Reply(text="one two three four", error_after=2))
    stream = await client.chat.completions.create(
        model="llama", stream=True, messages=[{"role": "user", "content": "x"}])
    seen = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            seen.append(chunk)
    assert seen and "unexpected EOF" in err.value.message


def test_partial_usage_of_a_cut_stream_is_an_estimate():
    translator = _translator()
    translator.request({"model": "m", "messages": [{"role": "user", "content": "x" * 40}]},
                       type("T", (), {"model": "llama3.2"})(), stream=True)
    for word in ("a ", "b "):
        translator.stream(Event(None, orjson.dumps({"model": "m", "done": False, "message": {
            "role": "assistant", "content": word}})))
    usage = translator.partial_usage()
    assert usage.estimated and usage.completion_tokens == 2 and usage.prompt_tokens > 0
