"""Gemini: the mapping tables, and end to end through gatewise with the real `openai` SDK
against the faithful fake Gemini API."""

import base64

import openai
import orjson
import pytest

from proxy.core.errors import ErrorClass, GatewayError
from proxy.core.framing import Event
from tests.fakes.gemini_upstream import API_KEY, FakeGemini, Reply
from tests.fakes.server import LoopbackServer
from translators.gemini import GeminiTranslator, model_path
from translators.gemini_request import (
    build_body,
    call_id,
    split_call_id,
    thinking_config,
)
from translators.gemini_stream import finish_reason, gemini_usage

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


# --- tables --------------------------------------------------------------------------

@pytest.mark.parametrize("reason,calls,expected", [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("PROHIBITED_CONTENT", False, "content_filter"), ("SPII", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("IMAGE_SAFETY", False, "content_filter"),
    ("OTHER", False, "stop"), ("MALFORMED_FUNCTION_CALL", False, "stop"),
    ("FINISH_REASON_UNSPECIFIED", False, "stop")])
def test_finish_reason_table(reason, calls, expected):
    assert finish_reason(reason, calls) == expected


def test_usage_table_counts_thoughts_as_completion_and_reasoning():
    usage = gemini_usage({"promptTokenCount": 10, "toolUsePromptTokenCount": 2,
                          "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                          "cachedContentTokenCount": 4, "totalTokenCount": 24})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
            usage.cached_tokens, usage.reasoning_tokens) == (12, 12, 24, 4, 7)


def _body(**chat):
    chat.setdefault("messages", [{"role": "user", "content": "hi"}])
    return build_body(chat, "gemini-2.5-flash", drop_unsupported=False)


@pytest.mark.parametrize("param,value,field,expected", [
    ("max_tokens", 10, "maxOutputTokens", 10), ("max_completion_tokens", 9, "maxOutputTokens", 9),
    ("temperature", 1.5, "temperature", 1.5), ("top_p", 0.5, "topP", 0.5),
    ("stop", "END", "stopSequences", ["END"]), ("n", 2, "candidateCount", 2),
    ("seed", 7, "seed", 7), ("presence_penalty", 0.5, "presencePenalty", 0.5),
    ("frequency_penalty", -1, "frequencyPenalty", -1)])
def test_generation_config_table(param, value, field, expected):
    assert _body(**{param: value})["generationConfig"][field] == expected


@pytest.mark.parametrize("param,value", [
    ("logprobs", True), ("logit_bias", {"1": 2}), ("audio", {}), ("parallel_tool_calls", False),
    ("functions", [])])
def test_unsupported_parameters_are_named(param, value):
    with pytest.raises(GatewayError) as err:
        _body(**{param: value})
    assert err.value.status == 400 and err.value.param == param
    assert param not in build_body({"messages": [{"role": "user", "content": "x"}],
                                    param: value}, "gemini-2.5-flash", drop_unsupported=True)


def test_six_stop_sequences_are_a_400_not_truncated():
    with pytest.raises(GatewayError) as err:
        _body(stop=list("abcdef"))
    assert err.value.param == "stop" and "at most 5" in err.value.message
    assert _body(stop=list("abcde"))["generationConfig"]["stopSequences"] == list("abcde")


@pytest.mark.parametrize("choice,expected", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]})])
def test_tool_choice_table(choice, expected):
    body = _body(tools=TOOLS, tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": expected}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == \
        TOOLS[0]["function"]["parameters"]


@pytest.mark.parametrize("effort,model,expected", [
    ("none", "gemini-2.5-flash", {"thinkingBudget": 0, "includeThoughts": False}),
    ("low", "gemini-2.5-flash", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("high", "gemini-2.5-pro", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("high", "gemini-3-pro-preview", {"thinkingLevel": "high", "includeThoughts": True})])
def test_reasoning_effort_table(effort, model, expected):
    assert thinking_config(effort, model) == expected


def test_response_format_and_system():
    body = _body(messages=[{"role": "system", "content": "Be brief."},
                           {"role": "developer", "content": "Use French."},
                           {"role": "user", "content": "hi"}],
                 response_format={"type": "json_schema", "json_schema": {
                     "name": "x", "schema": {"type": "object"}}})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"] == {"type": "object"}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_image_urls_are_refused_and_data_urls_inlined():
    with pytest.raises(GatewayError) as err:
        _body(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert err.value.param == "messages[0].content[0].image_url.url"
    body = _body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert body["contents"][0]["parts"][0]["inlineData"]["mimeType"] == "image/png"


def test_signature_travels_in_the_call_id():
    signature = base64.b64encode(bytes(range(200))).decode()
    openai_id = call_id("call_" + "a" * 24, signature)
    assert all(c.isalnum() or c in "-_" for c in openai_id)
    assert split_call_id(openai_id) == ("call_" + "a" * 24, signature)
    assert split_call_id("call_plain") == ("call_plain", None)


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "models/gemini-2.5-flash"])
def test_safe_model_names(model):
    assert model_path(model) == "gemini-2.5-flash"


@pytest.mark.parametrize("model", ["../x", "gemini?key=1", "a/b", "", "gemini 2"])
def test_unsafe_model_names_never_reach_the_url(model):
    with pytest.raises(GatewayError):
        model_path(model)


@pytest.mark.parametrize("status,body,cls,client_status,code", [
    (400, {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"},
     ErrorClass.BAD_REQUEST, 400, None),
    (400, {"code": 400, "message": "The input token count (132478) exceeds the maximum number "
           "of tokens allowed (131072).", "status": "INVALID_ARGUMENT"},
     ErrorClass.CONTEXT_WINDOW, 400, "context_length_exceeded"),
    (429, {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"},
     ErrorClass.RATE_LIMITED, 429, "upstream_rate_limit"),
    (503, {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"},
     ErrorClass.OVERLOADED, 503, "upstream_overloaded"),
    (504, {"code": 504, "message": "slow", "status": "DEADLINE_EXCEEDED"},
     ErrorClass.TIMEOUT, 504, "upstream_timeout"),
    (500, {"code": 500, "message": "oops", "status": "INTERNAL"}, ErrorClass.SERVER, 502,
     "upstream_error"),
    (404, {"code": 404, "message": "no model", "status": "NOT_FOUND"}, ErrorClass.NOT_FOUND,
     404, "model_not_found"),
    (403, {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}, ErrorClass.AUTH,
     502, "upstream_auth_error"),
    (400, {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
           "details": [{"reason": "API_KEY_INVALID"}]}, ErrorClass.AUTH, 502,
     "upstream_auth_error")])
def test_error_table(status, body, cls, client_status, code):
    from proxy.config.types import ProviderConfig
    translator = GeminiTranslator(ProviderConfig("g", "gemini", "http://x", api_key="test-key-123"))
    err = translator.error(status, {}, orjson.dumps({"error": body}))
    assert (err.error_class, err.status, err.code) == (cls, client_status, code)


def test_retry_delay_from_retry_info():
    from proxy.config.types import ProviderConfig
    translator = GeminiTranslator(ProviderConfig("g", "gemini", "http://x", api_key="test-key-123"))
    err = translator.error(429, {}, orjson.dumps({"error": {
        "code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}))
    assert err.retry_after == 37 and err.headers["retry-after"] == "37"


def test_stream_chunks_share_one_prefix_and_finish_once():
    from proxy.config.types import ProviderConfig
    translator = GeminiTranslator(ProviderConfig("g", "gemini", "http://x", api_key="test-key-123"))
    translator.include_usage = True
    events = [{"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}}],
               "responseId": "r1", "modelVersion": "gemini-2.5-flash"},
              {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}},
                                                     {"functionCall": {"name": "g"}}],
                                           "role": "model"}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2,
                                 "totalTokenCount": 5},
               "responseId": "r1", "modelVersion": "gemini-2.5-flash"}]
    chunks = []
    for event in events:
        out, _ = translator.stream(Event(None, orjson.dumps(event)))
        chunks += [orjson.loads(c) for c in out]
    assert translator.state.complete
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-1]
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert [c["index"] for c in calls] == [0, 1] and calls[0]["id"] != calls[1]["id"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


# --- end to end ----------------------------------------------------------------------

@pytest.fixture
async def fake():
    fake = FakeGemini()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def client(fake, start_gateway):
    backup = FakeGemini()
    fake.backup = backup
    async with LoopbackServer(backup.app) as second:
        gw = await start_gateway(f"""
            providers:
              gemini: {{type: gemini, base_url: "{fake.url}", api_key: {API_KEY}}}
              backup: {{type: gemini, base_url: "{second.url}", api_key: {API_KEY}}}
              badkey: {{type: gemini, base_url: "{fake.url}", api_key: wrong-key}}
            models:
              flash: {{targets: [{{provider: gemini, model: gemini-2.5-flash}}]}}
              pro3: {{targets: [{{provider: gemini, model: gemini-3-pro-preview}}]}}
              missing: {{targets: [{{provider: gemini, model: gemini-9-nope}}]}}
              wrongkey: {{targets: [{{provider: badkey, model: gemini-2.5-flash}}]}}
              flash-ha:
                targets: [{{provider: gemini, model: gemini-2.5-flash}},
                          {{provider: backup, model: gemini-2.5-flash}}]
        """)
        yield openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)


async def test_text_and_usage(fake, client):
    fake.script(Reply(text="Bonjour tout le monde"))
    reply = await client.chat.completions.create(
        model="flash", messages=[{"role": "system", "content": "French."},
                                 {"role": "user", "content": "Hello"}], max_tokens=50)
    assert reply.choices[0].message.content == "Bonjour tout le monde"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    received = fake.requests[-1]
    assert received.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert received.headers["x-goog-api-key"] == API_KEY and "key" not in received.query
    assert received.body["systemInstruction"] == {"parts": [{"text": "French."}]}
    assert received.body["generationConfig"] == {"maxOutputTokens": 50}


async def test_streaming_crlf_no_done_upstream_but_done_to_client(fake, client):
    fake.script(Reply(text="one two three four"))
    stream = await client.chat.completions.create(
        model="flash", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count"}])
    chunks = [c async for c in stream]
    received = fake.requests[-1]
    assert received.path.endswith(":streamGenerateContent") and received.query == {"alt": "sse"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "one two three four"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


async def test_raw_stream_ends_with_done(fake, client):
    import aiohttp
    base = str(client.base_url).rstrip("/")
    payload = {
        "model": "flash", "stream": True,
        "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session, \
            session.post(base + "/chat/completions", json=payload) as resp:
        raw = await resp.read()
    assert resp.status == 200
    assert raw.endswith(b"data: [DONE]\n\n") and b"\r\n" not in raw
    assert b'"usage"' not in raw


async def test_images_inline(fake, client):
    await client.chat.completions.create(model="flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG}}]}])
    parts = fake.last["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}}
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="flash", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert err.value.body["param"] == "messages[0].content[0].image_url.url"


async def test_multi_turn_parallel_tool_calls(fake, client):
    fake.script(Reply(text="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}},
                                           {"name": "get_weather", "args": {"city": "Tokyo"}}]),
                Reply(text="Sunny in both."))
    messages = [{"role": "user", "content": "Paris and Tokyo?"}]
    first = await client.chat.completions.create(model="flash", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.arguments for c in calls] == ['{"city":"Paris"}', '{"city":"Tokyo"}']
    assert calls[0].id != calls[1].id
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
                 {"role": "tool", "tool_call_id": calls[1].id, "content": '{"sky": "clear"}'}]
    second = await client.chat.completions.create(model="flash", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Sunny in both."
    contents = fake.last["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert [p["functionCall"]["args"] for p in contents[1]["parts"]] == [
        {"city": "Paris"}, {"city": "Tokyo"}]
    assert "id" not in contents[1]["parts"][0]["functionCall"]  # ours, not Gemini's
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
        {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}]


async def test_thought_signature_round_trip_streaming(fake, client):
    fake.script(Reply(text="", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}},
                                           {"name": "get_weather", "args": {"city": "Rome"}}]),
                Reply(text="Done."))
    messages = [{"role": "user", "content": "Oslo and Rome?"}]
    async with client.chat.completions.stream(model="pro3", messages=messages,
                                              tools=TOOLS) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and len(calls) == 2
    messages += [final.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": calls[0].id, "content": "cold"},
                 {"role": "tool", "tool_call_id": calls[1].id, "content": "warm"}]
    second = await client.chat.completions.create(model="pro3", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Done."
    model_turn = fake.last["contents"][1]["parts"]
    assert model_turn[0]["thoughtSignature"] in fake.signatures
    assert "thoughtSignature" not in model_turn[1]
    # Without the signature (a client that rewrote the ids) Gemini 3 refuses the turn.
    messages[1]["tool_calls"][0]["id"] = "call_rewritten"
    messages[2]["tool_call_id"] = "call_rewritten"
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="pro3", messages=messages, tools=TOOLS)
    assert "thought_signature" in err.value.message


async def test_gemini_call_ids_are_echoed(fake, client):
    fake.script(Reply(text="", tool_calls=[{"name": "get_weather", "args": {}, "id": "fc-1"}]),
                Reply(text="ok"))
    messages = [{"role": "user", "content": "x"}]
    first = await client.chat.completions.create(model="flash", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert call.id.startswith("fc-1")
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "[1, 2]"}]
    await client.chat.completions.create(model="flash", messages=messages, tools=TOOLS)
    contents = fake.last["contents"]
    assert contents[1]["parts"][0]["functionCall"]["id"] == "fc-1"
    assert contents[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather", "response": {"output": "[1, 2]"}, "id": "fc-1"}


async def test_reasoning_and_thought_usage(fake, client):
    fake.script(Reply(text="42", thought="Let me think.", usage={"thoughtsTokenCount": 30}))
    reply = await client.chat.completions.create(
        model="flash", reasoning_effort="low", messages=[{"role": "user", "content": "?"}])
    assert reply.choices[0].message.content == "42"
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Let me think."
    usage = reply.usage
    assert usage.completion_tokens_details.reasoning_tokens == 30
    assert usage.completion_tokens == 30 + 1  # candidates (1) + thoughts (30)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_finish_reasons_end_to_end(fake, client):
    fake.script(Reply(text="a b c d e f"), Reply(finish_reason="SAFETY"),
                Reply(block_reason="SAFETY"))
    long = await client.chat.completions.create(
        model="flash", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert long.choices[0].finish_reason == "length" and long.choices[0].message.content == "a b "
    filtered = await client.chat.completions.create(
        model="flash", messages=[{"role": "user", "content": "x"}])
    assert filtered.choices[0].finish_reason == "content_filter"
    stream = await client.chat.completions.create(
        model="flash", stream=True, messages=[{"role": "user", "content": "x"}])
    chunks = [c async for c in stream]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == [
        "content_filter"]


async def test_n_candidates(fake, client):
    fake.script(Reply(text="hi"))
    reply = await client.chat.completions.create(
        model="flash", n=2, messages=[{"role": "user", "content": "x"}])
    assert [c.index for c in reply.choices] == [0, 1]
    assert fake.last["generationConfig"]["candidateCount"] == 2


@pytest.mark.parametrize("reply,exc,status", [
    (Reply(status=429, message="Resource has been exhausted (e.g. check quota).", details=[
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]),
     openai.RateLimitError, 429),
    (Reply(status=503, message="The model is overloaded. Please try again later."),
     openai.InternalServerError, 503),
    (Reply(status=504, message="Deadline exceeded"), openai.InternalServerError, 504),
    (Reply(status=500, message="An internal error has occurred."),
     openai.InternalServerError, 502),
    (Reply(status=400, message="The input token count (132478) exceeds the maximum number of "
           "tokens allowed (131072)."), openai.BadRequestError, 400),
    (Reply(status=400, message="Request contains an invalid argument."),
     openai.BadRequestError, 400)])
async def test_error_classes_end_to_end(fake, client, reply, exc, status):
    fake.script(reply)
    with pytest.raises(exc) as err:
        await client.chat.completions.create(model="flash",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == status
    if status == 429:
        assert err.value.response.headers["retry-after"] == "3"
    if "token count" in (reply.message or ""):
        assert err.value.code == "context_length_exceeded"


async def test_auth_and_not_found(client):
    with pytest.raises(openai.InternalServerError) as err:
        await client.chat.completions.create(model="wrongkey",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and err.value.code == "upstream_auth_error"
    assert "wrong-key" not in err.value.message
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="missing",
                                             messages=[{"role": "user", "content": "x"}])


async def test_mid_stream_error_event(fake, client):
    fake.script(Reply(text="one two three four five", error_after=2))
    stream = await client.chat.completions.create(
        model="flash", stream=True, messages=[{"role": "user", "content": "x"}])
    seen = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            seen.append(chunk)
    assert seen and "internal error" in err.value.message.lower()


async def test_unavailable_falls_back(fake, client):
    fake.script(Reply(status=503, message="overloaded"))
    fake.backup.script(Reply(text="from backup"))
    reply = await client.chat.completions.create(model="flash-ha",
                                                 messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "from backup"


def test_partial_usage_of_a_cut_stream_is_an_estimate():
    from proxy.config.types import ProviderConfig
    translator = GeminiTranslator(ProviderConfig("g", "gemini", "http://x", api_key="test-key-123"))
    translator.stream(Event(None, orjson.dumps({
        "candidates": [{"content": {"parts": [{"text": "x" * 40}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}})))
    usage = translator.partial_usage()
    assert usage.estimated and usage.prompt_tokens == 5 and usage.completion_tokens == 10
