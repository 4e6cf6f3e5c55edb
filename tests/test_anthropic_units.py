"""Table-driven unit tests of the Anthropic translator: request mapping, response
mapping, the stream state machine and error classification."""

import copy

import orjson
import pytest

from proxy.config.catalog import ModelInfo
from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.errors import ErrorClass, GatewayError, UpstreamError
from proxy.core.framing import Event, SSEParser
from translators.anthropic import AnthropicTranslator
from translators.anthropic_thinking import carry
from translators.common import safe_tool_id

PROVIDER = ProviderConfig(name="anth", type="anthropic", base_url="http://up",
                          api_key="sk-ant-KEY123456", options={"anthropic_version": "2023-06-01",
                                                               "anthropic_beta": "b1"})
TARGET = TargetConfig(provider="anth", model="claude-x", info=ModelInfo(default_max_tokens=1000))
USER = {"role": "user", "content": "hi"}


def translate(chat, drop=False, stream=False):
    t = AnthropicTranslator(PROVIDER)
    t.drop_unsupported = drop
    before = copy.deepcopy(chat)
    req = t.request(chat, TARGET, stream=stream)
    assert chat == before  # never mutated
    return orjson.loads(req.body), req, t


REQUESTS = [  # (OpenAI fields, expected Anthropic fields)
    ({"messages": [USER]}, {"max_tokens": 1000, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    ({"max_tokens": 5}, {"max_tokens": 5}),
    ({"max_tokens": 5, "max_completion_tokens": 7}, {"max_tokens": 7}),
    ({"temperature": 0.3, "top_p": 0.9}, {"temperature": 0.3, "top_p": 0.9}),
    ({"stop": "X"}, {"stop_sequences": ["X"]}),
    ({"stop": ["X", "Y"]}, {"stop_sequences": ["X", "Y"]}),
    ({"user": "u1"}, {"metadata": {"user_id": "u1"}}),
    ({"n": 1, "store": True, "metadata": {"a": "b"}, "logprobs": False}, {}),
    ({"reasoning_effort": "medium"}, {"thinking": {"type": "enabled", "budget_tokens": 8192},
                                      "max_tokens": 9192}),
    ({"reasoning_effort": "high", "max_completion_tokens": 5000},
     {"thinking": {"type": "enabled", "budget_tokens": 4999}, "max_tokens": 5000}),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}}}},
     {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ({"response_format": {"type": "json_object"}},
     {"tool_choice": {"type": "tool", "name": "json_object"}}),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object"}, "strict": True}}], "tool_choice": "required",
      "parallel_tool_calls": False},
     {"tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": True}],
      "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "f"}}},
     {"tool_choice": {"type": "tool", "name": "f"}}),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
     {"tool_choice": {"type": "none"}}),
    ({"messages": [{"role": "developer", "content": "A"}, USER,
                   {"role": "system", "content": [{"type": "text", "text": "B"}]}]},
     {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}),
]


@pytest.mark.parametrize("fields,expected", REQUESTS)
def test_request_mapping(fields, expected):
    body, _, _ = translate({"model": "claude", "messages": [USER], **fields})
    for key, value in expected.items():
        assert body[key] == value, key
    assert body["model"] == "claude-x"
    assert "stream" not in body


def test_request_url_and_headers():
    _, req, t = translate({"model": "c", "messages": [USER], "stream": True,
                           "stream_options": {"include_usage": True}}, stream=True)
    assert req.url == "http://up/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-KEY123456"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["anthropic-beta"] == "b1"
    assert orjson.loads(req.body)["stream"] is True and t.include_usage


def test_messages_merge_tools_and_ids():
    chat = {"model": "c", "messages": [
        USER, USER,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call.1", "type": "function", "function": {"name": "f", "arguments": ""}},
            {"id": "call_2", "type": "function", "function": {"name": "g",
                                                              "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "call.1", "content": [{"type": "text", "text": "r1"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "r2"},
        {"role": "user", "content": "next"},
        {"role": "assistant", "content": "Prefill"}]}
    body, _, _ = translate(chat)
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert len(msgs[0]["content"]) == 2
    safe = safe_tool_id("call.1", "x")
    assert msgs[1]["content"] == [
        {"type": "tool_use", "id": safe, "name": "f", "input": {}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"a": 1}}]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": safe, "content": [{"type": "text", "text": "r1"}]},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "r2"},
        {"type": "text", "text": "next"}]
    assert msgs[3]["content"] == [{"type": "text", "text": "Prefill"}]


REFUSED = [  # (fields, param, code)
    ({"n": 2}, "n", "unsupported_value"),
    ({"seed": 3}, "seed", "unsupported_parameter"),
    ({"temperature": 1.2}, "temperature", "unsupported_value"),
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_value"),
    ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_value"),
    ({"logit_bias": {"1": 2}}, "logit_bias", "unsupported_value"),
    ({"logprobs": True}, "logprobs", "unsupported_value"),
    ({"some_new_param": 1}, "some_new_param", "unsupported_parameter"),
    ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"reasoning_effort": "high", "max_tokens": 1000}, "reasoning_effort", "unsupported_value"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{
        "id": "a", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
     "messages[0].tool_calls[0].function.arguments", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64"}}]}]}, "messages[0].content[0].image_url.url",
     "invalid_image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0].type", "invalid_value"),
]


@pytest.mark.parametrize("fields,param,code", REFUSED)
def test_refusals_name_the_parameter(fields, param, code):
    with pytest.raises(GatewayError) as info:
        translate({"model": "c", "messages": [USER], **fields})
    assert (info.value.status, info.value.param, info.value.code) == (400, param, code)


def test_drop_unsupported_drops_never_clamps():
    body, _, _ = translate({"model": "c", "messages": [USER], "n": 2, "seed": 1,
                            "temperature": 1.5, "frequency_penalty": 1}, drop=True)
    assert not {"n", "seed", "temperature", "frequency_penalty"} & set(body)


MESSAGE = {"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
           "stop_sequence": None,
           "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 20}}
RESPONSES = [  # (content, stop_reason, message fields, finish)
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "end_turn",
     {"content": "ab"}, "stop"),
    ([{"type": "text", "text": "x"}], "stop_sequence", {"content": "x"}, "stop"),
    ([{"type": "text", "text": "x"}], "max_tokens", {"content": "x"}, "length"),
    ([], "model_context_window_exceeded", {"content": None}, "length"),
    ([], "refusal", {"content": None}, "content_filter"),
    ([{"type": "thinking", "thinking": "t", "signature": "s"},
      {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}}], "tool_use",
     {"content": None, "reasoning_content": "t", "tool_calls": [
         {"id": carry("toolu_1", [{"type": "thinking", "thinking": "t", "signature": "s"}]),
          "type": "function", "function": {"name": "f",
                                                           "arguments": '{"a":[1]}'}}]},
     "tool_calls"),
]


@pytest.mark.parametrize("content,stop,fields,finish", RESPONSES)
def test_response_mapping(content, stop, fields, finish):
    t = AnthropicTranslator(PROVIDER)
    body = orjson.dumps({**MESSAGE, "content": content, "stop_reason": stop})
    out, usage = t.response(200, {}, body)
    choice = out["choices"][0]
    assert out["id"] == "chatcmpl-abc" and out["object"] == "chat.completion"
    assert choice["finish_reason"] == finish
    for key, value in fields.items():
        assert choice["message"][key] == value
    assert out["usage"]["prompt_tokens"] == 130 and out["usage"]["completion_tokens"] == 5
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (130, 5, 100)


def sse(*events):
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


START = {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                              "usage": {"input_tokens": 10, "output_tokens": 1}}}
STREAM = sse(
    START, {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking",
                                                                  "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta",
                                                          "thinking": "hm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta",
                                                          "signature": "s"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_A", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": '{"a":'}},
    {"type": "content_block_start", "index": 3, "content_block": {
        "type": "tool_use", "id": "toolu_B", "name": "g", "input": {}}},
    {"type": "some_future_event", "x": 1},
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta",
                                                          "partial_json": "{}"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": "1}"}},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 42}},
    {"type": "message_stop"})
EXPECTED_DELTAS = [
    ({"role": "assistant", "content": ""}, None),
    ({"reasoning_content": "hm"}, None),
    ({"content": "Hi"}, None),
    ({"tool_calls": [{"index": 0, "type": "function",  # the thinking rides in the id
                      "id": carry("toolu_A", [{"type": "thinking", "thinking": "hm",
                                               "signature": "s"}]),
                      "function": {"name": "f", "arguments": ""}}]}, None),
    ({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}, None),
    ({"tool_calls": [{"index": 1, "id": "toolu_B", "type": "function",
                      "function": {"name": "g", "arguments": ""}}]}, None),
    ({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, None),
    ({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, None),
    ({}, "tool_calls"),
]


def run_stream(raw, include_usage, piece=None):
    t = AnthropicTranslator(PROVIDER)
    t.include_usage = include_usage
    parser, out = SSEParser(), []
    pieces = [raw[i:i + piece] for i in range(0, len(raw), piece)] if piece else [raw]
    for p in pieces:
        for event in parser.feed(p):
            chunks, usage = t.stream(event)
            out += [orjson.loads(c) for c in chunks]
    return t, out, usage


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("piece", [None, 3])
def test_stream_state_machine(include_usage, piece):
    raw = STREAM.replace(b"\n", b"\r\n") if piece else STREAM
    t, chunks, usage = run_stream(raw, include_usage, piece)
    body = chunks[:-1] if include_usage else chunks
    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in body] == \
        EXPECTED_DELTAS
    for c in body:
        assert c["id"] == "chatcmpl-abc" and c["object"] == "chat.completion.chunk"
        assert c["model"] == "claude-x" and c["choices"][0]["logprobs"] is None
        assert ("usage" in c) == include_usage
    assert len({c["created"] for c in chunks}) == 1
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 42
    assert t.state.complete and t.state.finish_reason == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 42)


def test_stream_error_before_and_partial_usage():
    t = AnthropicTranslator(PROVIDER)
    t.stream(Event("message_start", orjson.dumps(START)))
    assert not t.state.has_content
    with pytest.raises(UpstreamError) as info:
        t.stream(Event("error", b' {"type": "error", "error": {"type": "overloaded_error", '
                                b'"message": "Overloaded"}} '))
    assert info.value.error_class is ErrorClass.OVERLOADED and info.value.status == 503
    assert t.partial_usage().prompt_tokens == 10
    assert not t.state.complete and t.end_of_stream() == [] and not t.state.complete


ERRORS = [  # (status, error type, message, class, client status, code)
    (429, "rate_limit_error", "slow", ErrorClass.RATE_LIMITED, 429, "upstream_rate_limit"),
    (529, "overloaded_error", "Overloaded", ErrorClass.OVERLOADED, 503, "upstream_overloaded"),
    (500, "api_error", "boom", ErrorClass.SERVER, 502, "upstream_error"),
    (504, "timeout_error", "slow", ErrorClass.TIMEOUT, 504, "upstream_timeout"),
    (401, "authentication_error", "bad key", ErrorClass.AUTH, 502, "upstream_auth_error"),
    (403, "permission_error", "no", ErrorClass.AUTH, 502, "upstream_auth_error"),
    (400, "invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum",
     ErrorClass.CONTEXT_WINDOW, 400, "context_length_exceeded"),
    (400, "invalid_request_error", "bad", ErrorClass.BAD_REQUEST, 400, None),
    (404, "not_found_error", "model: x", ErrorClass.NOT_FOUND, 404, None),
    (502, None, None, ErrorClass.SERVER, 502, "upstream_error"),
]


@pytest.mark.parametrize("status,etype,message,cls,client_status,code", ERRORS)
def test_error_mapping(status, etype, message, cls, client_status, code):
    t = AnthropicTranslator(PROVIDER)
    body = orjson.dumps({"type": "error", "error": {"type": etype, "message": message}}) \
        if etype else b"<html>bad gateway</html>"
    err = t.error(status, {"retry-after": "4"}, body)
    assert (err.error_class, err.status, err.code) == (cls, client_status, code)
    if cls is not ErrorClass.AUTH:
        assert err.retry_after == 4 and err.headers["retry-after"] == "4"
    assert "sk-ant-KEY123456" not in err.message
    assert cls is not ErrorClass.OVERLOADED or not 400 <= err.status < 500
