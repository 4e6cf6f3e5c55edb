"""The Responses API's pure parts: request checks, the chat mapping, the stream
grammar written for any chunk sequence, and the replay to a native upstream."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.errors import ErrorClass, GatewayError, UpstreamError
from proxy.core.usage import Usage
from proxy.server.responses_call import ResponsesCall
from proxy.server.responses_chat import chat_body, native_body
from proxy.server.responses_request import KNOWN, parse_request
from proxy.server.responses_stream import ResponsesEgress
from tests.fakes.responses_grammar import check_stream

FN = {"type": "function", "name": "f", "parameters": {"type": "object"}}


def _req(**body):
    return parse_request({"model": "m", "input": "hi", **body}, 100)


@pytest.mark.parametrize("body,param,code", [
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": 3, "input": "x"}, "model", "invalid_type"),
    ({"model": "m"}, "input", "missing_required_parameter"),
    ({"model": "m", "input": []}, "input", "empty_array"),
    ({"model": "m", "input": 5}, "input", "invalid_type"),
    ({"model": "m", "input": "x", "temprature": 1}, "temprature", "unknown_parameter"),
    ({"model": "m", "input": "x", "temperature": 2.5}, "temperature",
     "decimal_above_max_value"),
    ({"model": "m", "input": "x", "top_p": -1}, "top_p", "decimal_below_min_value"),
    ({"model": "m", "input": "x", "max_output_tokens": 15}, "max_output_tokens",
     "integer_below_min_value"),
    ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens",
     "invalid_type"),
    ({"model": "m", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
    ({"model": "m", "input": "x", "stream_options": {}}, "stream_options", "invalid_value"),
    ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
    ({"model": "m", "input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata",
     "object_above_max_properties"),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role",
     "invalid_value"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id", "missing_required_parameter"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "output_text",
                                                            "text": "x"}]}]},
     "input[0].content[0].type", "invalid_value"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "a b"}]},
     "tools[0].name", "invalid_value"),
    ({"model": "m", "input": "x", "tools": [FN, FN]}, "tools", "invalid_value"),
    ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"model": "m", "input": "x", "tools": [FN], "tool_choice": {"type": "function",
                                                                 "name": "g"}},
     "tool_choice", "invalid_value"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema", "missing_required_parameter"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort",
     "invalid_value"),
    ({"model": "m", "input": "x", "include": ["everything"]}, "include[0]", "invalid_value"),
    ({"model": "m", "input": "x", "include": [[]]}, "include[0]", "invalid_value"),
    ({"model": "m", "input": "x", "tools": [FN], "tool_choice": {"type": "function",
                                                                 "name": ["f"]}},
     "tool_choice", "invalid_value"),
    ({"model": "m", "input": "x", "previous_response_id": "../etc/passwd"},
     "previous_response_id", "previous_response_not_found"),
    ({"model": "m", "input": "x", "api_key": "sk-x"}, "api_key", "forbidden_parameter"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation",
     "unsupported_parameter"),
])
def test_bad_requests_name_the_parameter(body, param, code):
    with pytest.raises(GatewayError) as info:
        parse_request(body, 100)
    assert (info.value.status, info.value.param, info.value.code) == (400, param, code)
    assert info.value.type == "invalid_request_error" and info.value.message


def test_native_only_features_are_problems_not_errors():
    req = _req(tools=[{"type": "web_search"}, FN], prompt={"id": "pmpt_1"},
               truncation="auto", tool_choice={"type": "web_search"},
               input=[{"type": "item_reference", "id": "msg_1"},
                      {"role": "user", "content": [{"type": "input_image",
                                                    "file_id": "file_1"}]}])
    assert [p.param for p in req.problems] == [
        "input[0]", "input[1].content[0]", "tools[0]", "tool_choice", "truncation", "prompt"]
    err = req.problem.error("claude", "anthropic")
    assert err.status == 400 and err.param == "input[0]"
    assert "provider 'claude' (anthropic)" in err.message


def test_chat_body_mapping():
    req = _req(instructions="Be brief.", max_output_tokens=64, temperature=0.5,
               parallel_tool_calls=False, user="u1", tools=[FN], tool_choice="required",
               reasoning={"effort": "low", "summary": "auto"},
               text={"format": {"type": "json_schema", "name": "out", "strict": True,
                                "schema": {"type": "object"}}, "verbosity": "low"},
               fallbacks=["other"], metadata={"a": "b"}, store=False,
               input=[{"role": "user", "content": [
                          {"type": "input_text", "text": "look"},
                          {"type": "input_image", "image_url": "data:image/png;base64,AA",
                           "detail": "high"}]},
                      {"type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": "Calling."}]},
                      {"type": "function_call", "call_id": "c1", "name": "f",
                       "arguments": "{}"},
                      {"type": "function_call", "call_id": "c2", "name": "f",
                       "arguments": "{\"a\":1}"},
                      {"type": "function_call_output", "call_id": "c1", "output": "one"},
                      {"type": "function_call_output", "call_id": "c2",
                       "output": [{"type": "input_text", "text": "two"}]},
                      {"type": "reasoning", "id": "rs_1", "summary": []}])
    assert chat_body(req) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA",
                                                    "detail": "high"}}]},
            {"role": "assistant", "content": "Calling.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function",
                 "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"}],
        "temperature": 0.5, "parallel_tool_calls": False, "user": "u1",
        "max_completion_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "f",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "out", "schema": {"type": "object"}, "strict": True}},
        "verbosity": "low", "reasoning_effort": "low", "fallbacks": ["other"]}
    assert req.store is False


def test_native_body_replays_the_history_without_ids():
    req = _req(previous_response_id="resp_1", fallbacks=["x"], store=True)
    req.history = [
        {"id": "msg_1", "type": "message", "role": "user", "status": "completed",
         "content": [{"type": "input_text", "text": "q"}]},
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
        {"id": "rs_2", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "a", "annotations": []}]},
        {"id": "ws_1", "type": "web_search_call", "status": "completed"}]
    assert native_body(req, "gpt-4.1") == {
        "model": "gpt-4.1", "store": True,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                  {"type": "reasoning", "id": "rs_2", "summary": [],
                   "encrypted_content": "gAAA"},
                  {"role": "assistant", "content": "a"},
                  {"id": "ws_1", "type": "web_search_call", "status": "completed"},
                  {"role": "user", "content": "hi"}]}


# --- anything a client may send ----------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                    | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
PART = st.fixed_dictionaries({"type": st.sampled_from(
    ["input_text", "input_image", "input_file", "output_text", "refusal", "x"])},
    optional={"text": JSON, "image_url": JSON, "file_id": JSON, "file_data": JSON,
              "detail": JSON, "refusal": JSON})
ITEM = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning",
                             "web_search_call", None]) | JSON,
    "role": st.sampled_from(["user", "assistant", "system", "developer"]) | JSON,
    "content": st.text(max_size=5) | st.lists(PART, max_size=3) | JSON,
    "call_id": st.text(max_size=5) | JSON, "name": st.text(max_size=5) | JSON,
    "arguments": st.text(max_size=5) | JSON, "output": st.text(max_size=5) | JSON,
    "summary": st.lists(JSON, max_size=2) | JSON, "id": st.text(max_size=5) | JSON})
OPTIONAL = KNOWN - {"model", "input"}
BODY = st.fixed_dictionaries({"model": st.just("m") | JSON,
                              "input": st.text(max_size=5) | st.lists(ITEM, max_size=4)
                              | JSON},
                             optional={name: JSON for name in sorted(OPTIONAL)} | {
                                 "tools": st.lists(st.fixed_dictionaries(
                                     {"type": st.sampled_from(["function", "web_search"])},
                                     optional={"name": JSON | st.just("f"),
                                               "parameters": JSON}), max_size=2),
                                 "text": st.fixed_dictionaries({}, optional={
                                     "format": st.fixed_dictionaries({"type": st.sampled_from(
                                         ["text", "json_object", "json_schema"])}, optional={
                                         "name": JSON | st.just("n"), "schema": JSON}),
                                     "verbosity": JSON})})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_any_body_is_a_clean_400_or_a_chat_body(body):
    try:
        req = parse_request(body, 50)
    except GatewayError as err:
        assert err.status == 400 and isinstance(err.message, str) and err.message
        return
    chat = chat_body(req)
    orjson.dumps(chat)
    orjson.dumps(native_body(req, "t"))
    assert isinstance(chat["messages"], list)


# --- the stream grammar for any chunk sequence ---------------------------------------------

def _chunk(delta: dict | None = None, finish: str | None = None, usage: bool = False) -> bytes:
    return orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                         "model": "up", "choices": [] if usage else [
                             {"index": 0, "delta": delta or {}, "finish_reason": finish}]})


DELTA = st.one_of(
    st.builds(lambda t: {"content": t}, st.text(min_size=1, max_size=4)),
    st.builds(lambda t: {"reasoning_content": t}, st.text(min_size=1, max_size=4)),
    st.builds(lambda t: {"refusal": t}, st.text(min_size=1, max_size=4)),
    st.builds(lambda i, new, a: {"tool_calls": [
        {"index": i, **({"id": f"call_{i}", "type": "function",
                         "function": {"name": "f", "arguments": a}} if new
                        else {"function": {"arguments": a}})}]},
        st.integers(0, 2), st.booleans(), st.text(max_size=4)),
    st.just({"role": "assistant"}))


@settings(max_examples=300, deadline=None)
@given(st.lists(DELTA, max_size=12), st.sampled_from(["stop", "length", "tool_calls", None]),
       st.integers(1, 5), st.booleans())
def test_egress_writes_the_grammar_for_any_chunks(deltas, finish, batch, fail):
    call = ResponsesCall(_req())
    egress = ResponsesEgress(call)
    chunks = [_chunk({"role": "assistant"})] + [_chunk(d) for d in deltas]
    if finish:
        chunks.append(_chunk(finish=finish))
    chunks.append(_chunk(usage=True))
    raw = b"".join(egress.frames(chunks[i:i + batch]) for i in range(0, len(chunks), batch))
    if fail:
        raw += egress.error(UpstreamError(ErrorClass.RATE_LIMITED, 429, "slow down"))
    else:
        raw += egress.done(Usage(prompt_tokens=5, completion_tokens=3))
    events = check_stream(raw)
    last = events[-1]
    assert call.final == last["response"]
    if fail:
        assert last["type"] == "response.failed"
        assert last["response"]["error"] == {"code": "rate_limit_exceeded",
                                             "message": "slow down"}
    else:
        text = "".join(d.get("content", "") for d in deltas)
        output = last["response"]["output"]
        got = "".join(p.get("text", "") for i in output if i["type"] == "message"
                      for p in i["content"])
        assert got == text
        assert last["response"]["usage"]["total_tokens"] == 8
        assert last["type"] == ("response.incomplete" if finish == "length"
                                else "response.completed")


def test_egress_with_no_chunks_at_all_still_opens_and_closes():
    call = ResponsesCall(_req())
    egress = ResponsesEgress(call)
    events = check_stream(egress.frames([]) + egress.done(None))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "response.completed"]
    assert events[-1]["response"]["output"] == [] and events[-1]["response"]["usage"] is None


def test_egress_skips_what_is_not_a_chunks_shape():
    """An OpenAI-compatible upstream's chunks reach the egress as it sent them; a field
    of the wrong type is skipped, the grammar stays whole (it was a mid-stream 500)."""
    egress = ResponsesEgress(ResponsesCall(_req()))
    odd = [b"[1]", b'{"choices":[5]}', b'{"choices":"x"}', b'{"choices":[{"delta":"x"}]}',
           _chunk({"content": 5}), _chunk({"refusal": [1]}), _chunk({"reasoning_content": {}}),
           _chunk({"tool_calls": 5}), _chunk({"tool_calls": [5]}),
           _chunk({"tool_calls": [{"index": "a", "id": 7, "function": {"name": 5,
                                                                        "arguments": 7}}]}),
           _chunk({"content": "ok"}), _chunk(finish=5)]
    events = check_stream(egress.frames(odd) + egress.done(None))
    assert events[-1]["type"] == "response.completed"
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["function_call",
                                                                      "message"]


@pytest.mark.parametrize("completion", [
    {"choices": [{"message": "x"}]}, {"choices": "x", "created": "x", "model": 5},
    {"choices": [{"message": {"content": 5, "tool_calls": [{"function": "x", "id": 5}]}}]},
    {"choices": [{"message": {"content": [5, {"text": 7}, {"text": "ok"}], "refusal": 5,
                              "reasoning_content": [1]}, "finish_reason": [1]}]},
    {"choices": [{"message": {"tool_calls": 5}}]},
])
def test_an_odd_completion_still_becomes_a_response(completion):
    """A compatible server's completion is as it sent it: odd fields count as absent
    (they were a 500 after the upstream had answered and billed)."""
    from proxy.server.responses_output import from_chat
    response = from_chat(_req(), completion, None)
    assert response["status"] == "completed" and orjson.dumps(response)
    for item in response["output"]:
        assert all(isinstance(p.get("text", ""), str) for p in item.get("content", ()))
