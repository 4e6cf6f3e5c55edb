"""Any answer an upstream sends reaches the client as an answer or as the upstream's
protocol error (502 `upstream_bad_response`, which may fall back): a field of an
unexpected type in an otherwise well-formed answer never escapes a translator as a
gateway internal error (a 500, no fallback).

Each case starts from a well-formed answer of the provider's wire format and puts
an odd value at one place in it; a loopback upstream answers with it."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.server import LoopbackServer

ODD = st.sampled_from([None, True, 0, -1, 7, 1.5, "", "x", [], [1], ["x"], {}, {"x": 1},
                       [{}], [None], {"type": {}}])
CHAT = {"messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f",
                                                    "parameters": {"type": "object"}}}]}
ANTHROPIC_MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
    "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 1,
              "cache_creation_input_tokens": 2,
              "cache_creation": {"ephemeral_1h_input_tokens": 1}}}
ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {**ANTHROPIC_MESSAGE, "content": [],
                                          "stop_reason": None}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "hm"}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "s"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
    {"type": "message_stop"}]
GEMINI_CHUNK = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "hm", "thought": True}, {"text": "hi"},
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}]},
        "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3,
                      "thoughtsTokenCount": 1, "cachedContentTokenCount": 1,
                      "totalTokenCount": 9},
    "modelVersion": "gemini", "responseId": "r1"}
OLLAMA_LINES = [
    {"model": "m", "created_at": "2025-01-01T00:00:00Z",
     "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
    {"model": "m", "created_at": "2025-01-01T00:00:00Z",
     "message": {"role": "assistant", "content": "hi"}, "done": False},
    {"model": "m", "created_at": "2025-01-01T00:00:00Z",
     "message": {"role": "assistant", "content": "", "tool_calls": [
         {"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]},
     "done": False},
    {"model": "m", "created_at": "2025-01-01T00:00:00Z",
     "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
     "prompt_eval_count": 5, "eval_count": 3}]
OPENAI_COMPLETION = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
                                         "reasoning_content": "hm", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f",
                                                          "arguments": "{}"}}]},
                 "finish_reason": "tool_calls"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
OPENAI_CHUNKS = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "f", "arguments": "{}"}}]},
         "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}]
#: provider type → (the non-streamed answer, the stream's events)
WELL_FORMED = {
    "anthropic": (ANTHROPIC_MESSAGE, ANTHROPIC_EVENTS),
    "gemini": (GEMINI_CHUNK, [GEMINI_CHUNK]),
    "ollama": ({**OLLAMA_LINES[-1], "message": {"role": "assistant", "content": "hi",
                                                "thinking": "hm"}}, OLLAMA_LINES),
    "openai": (OPENAI_COMPLETION, OPENAI_CHUNKS),
}


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into `value` (dict keys and list indexes), the root excluded."""
    out = []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        out.append(path + (key,))
        out += _places(inner, path + (key,))
    return out


def _put(value: Any, path: tuple, odd: Any) -> Any:
    changed = copy.deepcopy(value)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = odd
    return changed


class OddUpstream:
    """Answers every wire format with what the test set: JSON, SSE or NDJSON."""

    def __init__(self) -> None:
        self.answer: list[Any] = []
        self.app = web.Application()
        for path in ("/v1/messages", "/v1/chat/completions", "/api/chat",
                     "/v1beta/models/{call}"):
            self.app.router.add_post(path, self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        streamed = bool(body.get("stream")) or "streamGenerateContent" in request.path
        if not streamed:
            return web.Response(body=orjson.dumps(self.answer[0]),
                                content_type="application/json")
        ndjson = request.path == "/api/chat"
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson" if ndjson
                                           else "text/event-stream"})
        await resp.prepare(request)
        for event in self.answer:
            data = orjson.dumps(event)
            await resp.write(data + b"\n" if ndjson else b"data: " + data + b"\n\n")
        if request.path == "/v1/chat/completions":
            await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def gw(start_gateway):
    upstream = OddUpstream()
    async with LoopbackServer(upstream.app) as server:
        gw = await start_gateway(f"""
            providers:
              anthropic: {{type: anthropic, base_url: "{server.url}", api_key: k}}
              gemini: {{type: gemini, base_url: "{server.url}", api_key: k}}
              ollama: {{type: ollama, base_url: "{server.url}"}}
              openai: {{type: openai, base_url: "{server.url}/v1", api_key: k}}
            models:
              anthropic: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
              gemini: {{targets: [{{provider: gemini, model: gemini-2.5-flash}}]}}
              ollama: {{targets: [{{provider: ollama, model: qwen3}}]}}
              openai: {{targets: [{{provider: openai, model: gpt-4o}}]}}
            policies: {{retry: {{attempts: 0}}, breaker: {{failures: 1000000}}}}
        """)
        gw.upstream = upstream
        async with aiohttp.ClientSession() as http:
            gw.http = http
            yield gw


#: the same question on each inbound API
ASK = {"/v1/chat/completions": CHAT,
       "/v1/responses": {"input": "hi", "tools": [{"type": "function", "name": "f",
                                                    "parameters": {"type": "object"}}]},
       "/v1/messages": {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
                        "tools": [{"name": "f", "input_schema": {"type": "object"}}]}}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(WELL_FORMED)), st.booleans(), st.sampled_from(sorted(ASK)),
       st.data(), ODD)
async def test_an_odd_field_anywhere_is_an_answer_or_a_protocol_error(gw, kind, stream, path,
                                                                      data, odd):
    whole, events = WELL_FORMED[kind]
    answer = events if stream else [whole]
    gw.upstream.answer = _put(answer, data.draw(st.sampled_from(_places(answer))), odd)
    async with gw.http.post(gw.url + path, json={**ASK[path], "model": kind,
                                                 "stream": stream}) as resp:
        raw = await resp.read()
    assert resp.status in (200, 400, 500, 502), raw  # Anthropic's clients see a 502 as 500
    assert b"internal error" not in raw, raw
