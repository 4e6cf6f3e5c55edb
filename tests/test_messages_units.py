"""The /v1/messages mapping modules on their own, attacked with odd values: the
request translation never crashes, the stream egress always yields a grammar the
official SDK's accumulator takes, and the native adapter's edge cases."""

from __future__ import annotations

import re
from types import MappingProxyType

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config.catalog import lookup
from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.errors import ErrorClass, GatewayError, UpstreamError
from proxy.core.framing import Event, SSEParser
from proxy.core.usage import Usage
from translators.anthropic import AnthropicTranslator
from translators.inbound_messages import translate
from translators.inbound_messages_native import (
    MessagesRequest,
    client_betas,
    client_version,
    forwarded_betas,
)
from translators.inbound_messages_reply import error_payload, error_status, to_message, tool_id
from translators.inbound_messages_stream import MessagesEgress, native_frame
from translators.openai import OpenAITranslator

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
FIELDS = ["system", "messages", "max_tokens", "tools", "tool_choice", "thinking",
          "output_config", "metadata", "stop_sequences", "temperature", "top_p", "top_k",
          "container", "stream", "whatever"]
BLOCKS = st.fixed_dictionaries({"type": st.sampled_from(
    ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
     "search_result", "server_tool_use", "x"])}, optional={
    "text": JSON, "source": JSON, "id": JSON, "name": JSON, "input": JSON, "content": JSON,
    "tool_use_id": JSON, "is_error": JSON, "title": JSON})


def _body(fields, messages):
    return {"model": "m", "messages": messages, **fields}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), JSON),
       st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                       "content": st.text(max_size=5)
                                       | st.lists(BLOCKS, max_size=4)}), min_size=1,
                max_size=4))
def test_translation_never_crashes_and_is_json(fields, messages):
    fields.pop("messages", None)
    result = translate(_body(fields, messages))
    assert result.chat["model"] == "m" and isinstance(result.chat["messages"], list)
    orjson.dumps(result.chat)
    for problem in (result.strict, result.optional):
        assert problem is None or (isinstance(problem, GatewayError) and problem.status == 400)


@pytest.mark.parametrize("thinking,output_config,effort", [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "disabled"}, None, None),
    ({"type": "adaptive"}, {"effort": "max"}, "high"),
    (None, {"effort": "low"}, "low"),
    (None, {"effort": ["low"]}, None),  # unhashable: a problem named, not a crash
])
def test_thinking_and_effort_become_reasoning_effort(thinking, output_config, effort):
    body = _body({"max_tokens": 5, "thinking": thinking, "output_config": output_config},
                 [{"role": "user", "content": "hi"}])
    assert translate(body).chat.get("reasoning_effort") == effort


@pytest.mark.parametrize("block,strict", [
    ({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}, True),
    ({"type": "image", "source": {"type": "file", "file_id": "f"}}, True),
    ({"type": "search_result", "source": "s", "title": "t", "content": []}, True),
    ({"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                     "data": "abc"}, "title": "T"}, False),
])
def test_what_has_no_chat_form_is_strict(block, strict):
    result = translate(_body({}, [{"role": "user", "content": [block]}]))
    assert (result.strict is not None) == strict
    if not strict:
        assert result.chat["messages"][0]["content"] == [{"type": "text", "text": "T\n\nabc"}]


def test_optional_things_are_left_out_and_named():
    result = translate(_body({"container": "c", "tools": [
        {"type": "bash_20250124", "name": "bash"}], "tool_choice": {"type": "auto"}},
        [{"role": "user", "content": "hi"}]))
    assert result.strict is None and result.optional.param in ("container", "tools.0")
    assert "tools" not in result.chat and "tool_choice" not in result.chat


def test_pdf_becomes_a_file_part():
    result = translate(_body({}, [{"role": "user", "content": [
        {"type": "document", "title": "spec", "source": {
            "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]))
    assert result.chat["messages"][0]["content"] == [{"type": "file", "file": {
        "filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]


@given(st.text(max_size=40))
def test_tool_ids_are_valid_for_anthropic_and_stable(value):
    made = tool_id(value)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", made)
    if value:
        assert tool_id(value) == made
    if value and re.fullmatch(r"[a-zA-Z0-9_-]+", value):
        assert made == value


def test_unsafe_ids_that_look_alike_stay_distinct():
    assert tool_id("a.b") != tool_id("a:b") and tool_id(None) != tool_id(None)


# --- the stream egress -------------------------------------------------------------

DELTAS = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"), "content": st.text(max_size=6) | st.none(),
    "reasoning_content": st.text(max_size=6), "refusal": st.text(max_size=4),
    "tool_calls": st.lists(st.fixed_dictionaries(
        {"index": st.integers(0, 2)},
        optional={"id": st.text(max_size=6) | st.none(),
                  "function": st.fixed_dictionaries({}, optional={
                      "name": st.text(max_size=5), "arguments": st.sampled_from(
                          ["", "{", '"a"', ":1", "}", '{"x":2}'])})}), max_size=2)})


class _Mode:
    native = False


def _events(data: bytes) -> list[tuple[str, dict]]:
    events = SSEParser().feed(data)
    assert all(e.name for e in events)
    return [(e.name, orjson.loads(e.data)) for e in events]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
    {"index": st.just(0), "delta": DELTAS},
    optional={"finish_reason": st.sampled_from(["stop", "length", "tool_calls",
                                                 "content_filter", "weird"])}), max_size=1)},
    optional={"id": st.text(max_size=5), "model": st.text(max_size=5)}), max_size=8))
def test_any_chunk_sequence_gives_a_grammar_the_sdk_accumulates(chunks):
    egress = MessagesEgress(_Mode(), "req_1")
    wire = egress.frames([orjson.dumps(c) for c in chunks]) + egress.done(Usage(10, 5, 2))
    events = _events(wire)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta",
                                                                     "message_stop"]
    assert all(payload["type"] == name for name, payload in events)
    snapshot, bufs, open_blocks = None, {}, []
    for name, payload in events:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert not open_blocks and payload["index"] == len(snapshot.content)
            open_blocks.append(payload["index"])
        elif name == "content_block_stop":
            assert open_blocks.pop() == payload["index"]
        try:
            snapshot = accumulate_event(event=payload, current_snapshot=snapshot,
                                        json_bufs=bufs)
        except ValueError as exc:  # the SDK refuses tool JSON that is not JSON, as it
            assert "tool parameter JSON" in str(exc)  # would from Anthropic itself
            return
    assert not open_blocks and snapshot.stop_reason is not None
    assert (snapshot.usage.input_tokens, snapshot.usage.cache_read_input_tokens,
            snapshot.usage.output_tokens) == (8, 2, 5)
    for block in snapshot.content:
        if block.type == "tool_use":
            assert re.fullmatch(r"[a-zA-Z0-9_-]+", block.id)


def test_an_error_mid_stream_is_an_anthropic_error_event():
    egress = MessagesEgress(_Mode(), "req_9")
    err = UpstreamError(ErrorClass.OVERLOADED, 503, "Overloaded", code="upstream_overloaded")
    (name, payload), = _events(egress.error(err))
    assert name == "error" and payload == {"type": "error", "request_id": "req_9", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize("data", [b'{"type":"ping"}', b'{"index":0,"type":"content_block_stop"}',
                                  b'{ "type" : "message_stop" }'])
def test_native_frames_take_their_name_from_the_type(data):
    (name, payload), = _events(native_frame(data))
    assert name == payload["type"]


# --- errors and whole answers --------------------------------------------------------

@pytest.mark.parametrize("err,status,kind", [
    (UpstreamError(ErrorClass.OVERLOADED, 503, "o"), 529, "overloaded_error"),
    (UpstreamError(ErrorClass.SERVER, 502, "s"), 500, "api_error"),
    (UpstreamError(ErrorClass.TIMEOUT, 504, "t"), 504, "timeout_error"),
    (UpstreamError(ErrorClass.RATE_LIMITED, 429, "r"), 429, "rate_limit_error"),
    (GatewayError(503, "none left", "server_error"), 529, "overloaded_error"),
    (GatewayError(403, "no", "invalid_request_error"), 403, "permission_error"),
    (GatewayError(422, "odd", "invalid_request_error"), 422, "invalid_request_error"),
    (GatewayError(501, "odd", "server_error"), 501, "api_error"),
])
def test_error_statuses_and_types(err, status, kind):
    assert error_status(err) == status and error_payload(err, None)["error"]["type"] == kind


@given(JSON)
def test_any_completion_becomes_a_message(completion):
    message = to_message(completion if isinstance(completion, dict) else {}, None)
    assert message["type"] == "message" and message["stop_reason"] is not None
    orjson.dumps(message)


def test_tool_calls_that_are_not_a_list_are_no_calls():
    message = to_message({"choices": [{"message": {"content": "hi", "tool_calls": 5}}]}, None)
    assert [b["type"] for b in message["content"]] == ["text"]


def test_a_cut_tool_call_keeps_its_place_with_empty_input():
    message = to_message({"id": "chatcmpl-1", "model": "g", "choices": [{"message": {
        "content": None, "tool_calls": [{"id": "c", "function": {"name": "f",
                                                                 "arguments": '{"a": '}}]},
        "finish_reason": "length"}]}, Usage(5, 5))
    assert message["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert message["stop_reason"] == "max_tokens" and message["id"] == "msg_1"


# --- the native adapter -----------------------------------------------------------

ANTHROPIC = ProviderConfig(name="a", type="anthropic", base_url="http://x", api_key="K",
                           options=MappingProxyType({"anthropic_version": "2023-06-01",
                                                     "anthropic_beta": "b-1, b-2",
                                                     "allowed_betas": ("c-1",)}))
TARGET = TargetConfig(provider="a", model="claude-sonnet-4-5")


def _adapter(body=None, betas=()):
    body = body or {"model": "claude", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}]}
    request = MessagesRequest(body, translate(body), None, betas)
    return request, request.adapter(AnthropicTranslator(ANTHROPIC))


def test_native_request_is_the_clients_body_with_the_target_model():
    body = {"model": "claude", "max_tokens": 5, "future_field": {"x": 1},
            "messages": [{"role": "user", "content": "hi"}]}
    request, adapter = _adapter(body, client_betas("c-1, d-2,  bad value,c-1"))
    up = adapter.request({}, TARGET, stream=False)
    assert request.native and orjson.loads(up.body) == {**body, "model": "claude-sonnet-4-5"}
    assert up.headers["anthropic-beta"] == "b-1,b-2,c-1" and up.headers["x-api-key"] == "K"
    assert up.headers["anthropic-version"] == "2023-06-01"  # the client sent none usable
    assert client_version("2026-10-21") == "2026-10-21" and client_version("x\r\ny") is None
    assert forwarded_betas({"allowed_betas": ("*",)}, ("x-1",)) == "x-1"


def test_native_stream_events_are_kept_on_one_line_and_tracked():
    _, adapter = _adapter()
    adapter.request({}, TARGET, stream=True)
    out, usage = adapter.stream(Event("message_start", b'{"type":"message_start",\n"message":'
                                      b'{"usage":{"input_tokens":7,"output_tokens":1}}}'))
    assert b"\n" not in out[0] and usage is None and not adapter.state.has_content
    adapter.stream(Event("content_block_delta", b'{"type":"content_block_delta","index":0,'
                                                b'"delta":{"type":"text_delta","text":"abcdefgh"}}'))
    partial = adapter.partial_usage()
    assert adapter.state.has_content and (partial.prompt_tokens, partial.completion_tokens,
                                          partial.estimated) == (7, 2, True)
    with pytest.raises(UpstreamError) as err:
        adapter.stream(Event("error", b'{"type":"error","error":{"type":"overloaded_error",'
                                      b'"message":"Overloaded"}}'))
    assert err.value.error_class is ErrorClass.OVERLOADED and err.value.status == 529
    with pytest.raises(UpstreamError):
        adapter.stream(Event(None, b'{"index":1}'))


def test_translated_attempts_raise_what_has_no_chat_form():
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}
    request = MessagesRequest(body, translate(body))
    openai = ProviderConfig(name="o", type="openai", base_url="https://api.openai.com/v1")
    adapter = request.adapter(OpenAITranslator(openai))
    with pytest.raises(GatewayError) as err:
        adapter.request(request.translated.chat, TargetConfig(provider="o", model="gpt-4o"),
                        stream=False)
    assert not request.native and err.value.param == "messages.0.content.0.source"


def test_real_openai_gets_max_completion_tokens():
    body = {"model": "m", "max_tokens": 77, "messages": [{"role": "user", "content": "hi"}]}
    request = MessagesRequest(body, translate(body))
    openai = ProviderConfig(name="o", type="openai", base_url="https://api.openai.com/v1")
    up = request.adapter(OpenAITranslator(openai)).request(
        request.translated.chat, TargetConfig(provider="o", model="gpt-5"), stream=False)
    sent = orjson.loads(up.body)
    assert sent["max_completion_tokens"] == 77 and "max_tokens" not in sent


def test_the_beta_allow_list_is_checked_at_start():
    from proxy.config.load import ConfigError
    from proxy.server.configure import parse_config

    base = """
        providers: {{a: {{type: anthropic, api_key: k, allowed_betas: {value}}}}}
        models: {{c: {{targets: [{{provider: a, model: claude-sonnet-4-5}}]}}}}
    """
    config = parse_config(base.format(value='[context-1m-2025-08-07, "*"]'), {})
    assert config.providers["a"].options["allowed_betas"] == ("context-1m-2025-08-07", "*")
    assert parse_config(base.format(value="[]"), {}).providers["a"].options[
        "allowed_betas"] == ()
    for value, problem in (("x", "must be a list"), ('["a b"]', "allowed_betas[0]"),
                           ("[7]", "allowed_betas[0]"), ('["A,B"]', "allowed_betas[0]")):
        with pytest.raises(ConfigError) as err:
            parse_config(base.format(value=value), {})
        assert problem in str(err.value)


def test_what_claude_code_sends_translates_without_a_problem():
    """The shape of a Claude Code request (captured from `claude -p`): a mid-conversation
    system turn, adaptive thinking, an effort, context management."""
    body = {"model": "m", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc"},
                       {"type": "text", "text": "You are a Claude agent.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "ctx"},
                                                      {"type": "text", "text": "say hello"}]},
                         {"role": "system", "content": "Available agent types: ..."}],
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
            "metadata": {"user_id": '{"device_id":"d"}'}, "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "output_config": {"effort": "high"}}
    result = translate(body)
    assert result.strict is None and result.optional is None
    assert not result.thinking_required
    assert [m["role"] for m in result.chat["messages"]] == ["system", "user", "system"]
    assert result.chat["reasoning_effort"] == "high" and result.chat["stream"] is True


def test_hinted_reasoning_is_dropped_where_the_model_cannot_reason():
    body = {"model": "m", "max_tokens": 10, "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": "hi"}]}
    request = MessagesRequest(body, translate(body))
    openai = ProviderConfig(name="o", type="openai", base_url="http://local/v1")
    up = request.adapter(OpenAITranslator(openai)).request(
        request.translated.chat, TargetConfig(provider="o", model="gpt-4o",
                                              info=lookup("gpt-4o")), stream=False)
    assert "reasoning_effort" not in orjson.loads(up.body)


def test_thinking_another_upstream_made_is_not_sent_to_anthropic():
    made_elsewhere = {"type": "thinking", "thinking": "from gpt", "signature": ""}
    claude = {"type": "thinking", "thinking": "mine", "signature": "sig_1"}
    body = {"model": "claude", "max_tokens": 5, "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [made_elsewhere, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": [claude, {"type": "text", "text": "d"}]},
        {"role": "user", "content": "e"}]}
    _, adapter = _adapter(body)
    sent = orjson.loads(adapter.request({}, TARGET, stream=False).body)["messages"]
    assert sent[1]["content"] == [{"type": "text", "text": "b"}]
    assert sent[3]["content"][0] == claude and body["messages"][1]["content"][0] is \
        made_elsewhere  # the client's request is never changed
