"""Properties every translator keeps, whatever it is given (hypothesis):

- request mapping: a chat body with any JSON value in any field is either mapped
  or refused with a 4xx GatewayError, never anything else, and the client's body
  is never changed;
- stream mapping: any valid upstream stream (the faithful fakes' own grammar for
  random answers), split at any read boundaries, translates without an
  exception, ends complete, and yields only JSON chunk objects;
- framing: SSE and NDJSON framers give the same events for any split of the
  same bytes.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config.catalog import lookup
from proxy.config.types import ProviderConfig, ServerConfig, TargetConfig
from proxy.core.errors import GatewayError
from proxy.core.framing import Event, NDJSONParser, SSEParser, new_framer
from proxy.server.chat import _parse_chat
from tests.fakes import anthropic_upstream, azure_upstream, gemini_upstream, ollama_upstream
from tests.fakes import openai_upstream
from translators import PROVIDER_TYPES
from translators.functions import functions_adapter

MODELS = {"openai": "gpt-4o", "azure": "gpt4o-prod", "anthropic": "claude-sonnet-4-5",
          "gemini": "gemini-2.5-flash", "ollama": "llama3.2", "mock": "echo"}
#: (provider type, upstream model): Gemini 3 maps reasoning differently
KINDS = sorted(MODELS.items()) + [("gemini", "gemini-3-pro-preview")]
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def translator(kind: str, model: str | None = None) -> tuple[Any, TargetConfig]:
    cls = PROVIDER_TYPES[kind]
    options = {name: opt.default for name, opt in cls.provider_options.items()}
    provider = ProviderConfig(kind, kind, "http://127.0.0.1:9", api_key="k-0123456789",
                              options=options)
    model = model or MODELS[kind]
    return cls(provider), TargetConfig(kind, model, info=lookup(model))


# --- request mapping ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=6) | st.sampled_from(["user", "assistant", "tool", "system", "text",
                                               "image_url", "function", "json_schema", "auto",
                                               "none", "required", "low", "high"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "text", "name", "content", "role", "function", "arguments",
                         "parameters", "url", "image_url", "id", "schema", "json_schema",
                         "tool_calls", "include_usage", "detail", "strict"])
        | st.text(max_size=4), inner, max_size=4),
    max_leaves=12)
FIELDS = ["messages", "tools", "tool_choice", "response_format", "max_tokens",
          "max_completion_tokens", "temperature", "top_p", "stop", "n", "seed", "logit_bias",
          "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
          "parallel_tool_calls", "reasoning_effort", "stream_options", "user", "metadata",
          "functions", "function_call", "modalities", "audio", "prediction", "store",
          "service_tier", "top_k", "verbosity", "web_search_options"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "function_call",
                  "refusal", "reasoning_content"]


@st.composite
def chat_bodies(draw) -> dict[str, Any]:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    for _ in range(draw(st.integers(0, 3))):
        message = dict(draw(st.sampled_from([
            {"role": "user", "content": "x"}, {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"}])))
        if draw(st.booleans()):
            message[draw(st.sampled_from(MESSAGE_FIELDS))] = draw(JSON)
        messages.insert(draw(st.integers(0, len(messages))), message)
    body: dict[str, Any] = {"model": "m", "messages": messages}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        body[name] = draw(JSON)
    if draw(st.booleans()):
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": draw(st.booleans())})
    return body


@SETTINGS
@given(st.sampled_from(KINDS), chat_bodies())
def test_request_mapping_maps_or_answers_4xx_for_any_value(kind, body):
    original = copy.deepcopy(body)
    try:
        stream = _parse_chat(body, ServerConfig())
        adapter = functions_adapter(body)
        chat, target = translator(*kind)
        if adapter is not None:
            chat = adapter(chat)
        request = chat.request(body, target, stream=stream)
    except GatewayError as err:
        assert 400 <= err.status < 500, (err.status, err.message)
        assert isinstance(err.message, str) and err.message
        return
    finally:
        assert body == original  # the client's request is never changed
    assert isinstance(request.body, bytes) and request.url.startswith("http")


# --- stream mapping ----------------------------------------------------------------------

WORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
CALLS = st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["get_weather", "lookup", "f_1"]),
    "args": st.dictionaries(st.sampled_from(["city", "n", "q"]),
                            st.text(max_size=8) | st.integers(0, 99), max_size=2)}),
    max_size=2)
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("get_weather", "lookup", "f_1")]


def upstream_stream(kind: str, body: dict[str, Any], text: str, calls: list[dict],
                    thinking: str | None) -> bytes:
    """What the faithful fake of `kind` streams for `body` and this answer."""
    if kind == "openai":
        reply = openai_upstream.Reply(text=text, tool_calls=[
            {"id": f"call_{k}", "name": c["name"], "arguments": orjson.dumps(c["args"]).decode()}
            for k, c in enumerate(calls)] or None)
        return b"".join(openai_upstream._Answer(body, reply).events())
    if kind == "azure":
        reply = azure_upstream.Reply(text=text, tool_calls=[
            {"id": f"call_{k}", "name": c["name"], "arguments": orjson.dumps(c["args"]).decode()}
            for k, c in enumerate(calls)] or None)
        return b"".join(azure_upstream._Answer(body, "gpt4o-prod", reply).events())
    if kind == "anthropic":
        reply = anthropic_upstream.Reply(text=text, thinking=thinking, tool_calls=[
            {"name": c["name"], "input": c["args"]} for c in calls] or None)
        message = anthropic_upstream._Answer(body, reply).message()
        return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                        for name, data in anthropic_upstream.stream_events(message))
    if kind == "gemini":
        reply = gemini_upstream.Reply(text=text, thought=thinking, tool_calls=[
            {"name": c["name"], "args": c["args"]} for c in calls] or None)
        chunks = gemini_upstream._Answer(body, MODELS["gemini"], reply, set(),
                                         lambda: "c2lnbmF0dXJl").chunks()
        return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)
    reply = ollama_upstream.Reply(text=text, thinking=thinking, tool_calls=[
        {"name": c["name"], "arguments": c["args"]} for c in calls] or None)
    return b"".join(orjson.dumps(line) + b"\n" for line in ollama_upstream._answer(body, reply))


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@SETTINGS
@given(st.sampled_from(["openai", "azure", "anthropic", "gemini", "ollama"]), WORDS, CALLS,
       st.none() | WORDS, st.booleans(), st.lists(st.integers(0, 10**6), max_size=12))
def test_any_valid_upstream_stream_translates_without_raising(kind, text, calls, thinking,
                                                              include_usage, cuts):
    chat, target = translator(kind)
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "go"}],
                            "stream": True, "stream_options": {"include_usage": include_usage},
                            "max_tokens": 2000}
    if calls:
        body["tools"] = TOOLS
    if thinking is not None and kind in ("anthropic", "gemini", "ollama"):
        body["reasoning_effort"] = "low"
    request = chat.request(body, target, stream=True)
    data = upstream_stream(kind, orjson.loads(request.body), text, calls, thinking)
    framer = new_framer(chat.framing)
    out: list[bytes] = []
    usage = None
    for piece in splits(data, cuts):
        for event in framer.feed(piece):
            chunks, found = chat.stream(event)
            out += chunks
            usage = found or usage
    for event in framer.flush():
        chunks, found = chat.stream(event)
        out += chunks
        usage = found or usage
    out += chat.end_of_stream()
    assert chat.state.complete and chat.state.has_content
    parsed = [orjson.loads(chunk) for chunk in out]
    assert all(isinstance(c, dict) and c.get("object") == "chat.completion.chunk"
               for c in parsed)
    assert usage is not None  # what the stream cost is always known
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in parsed)


# --- framing -----------------------------------------------------------------------------

DATA = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@SETTINGS
@given(st.lists(st.tuples(st.none() | st.sampled_from(["error", "message_start", "x"]),
                          st.lists(DATA, min_size=1, max_size=3)), max_size=6),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.lists(st.integers(0, 10**6), max_size=20))
def test_sse_framer_gives_the_same_events_for_any_split(events, eol, cuts):
    data = b""
    expected = []
    for name, lines in events:
        if name is not None:
            data += b"event: " + name.encode() + eol
        for line in lines:
            data += b"data: " + line + eol
        data += eol
        expected.append(Event(name, b"\n".join(lines)))
    whole = SSEParser()
    once = whole.feed(data) + whole.flush()
    parser = SSEParser()
    pieces = []
    for piece in splits(data, cuts):
        pieces += parser.feed(piece)
    pieces += parser.flush()
    assert pieces == once == expected


@SETTINGS
@given(st.lists(DATA.filter(lambda b: b.strip()), max_size=8),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans(),
       st.lists(st.integers(0, 10**6), max_size=20))
def test_ndjson_framer_gives_the_same_events_for_any_split(lines, eol, final_eol, cuts):
    data = eol.join(lines) + (eol if final_eol and lines else b"")
    whole = NDJSONParser()
    once = whole.feed(data) + whole.flush()
    parser = NDJSONParser()
    pieces = []
    for piece in splits(data, cuts):
        pieces += parser.feed(piece)
    pieces += parser.flush()
    assert pieces == once
    assert [e.data for e in once] == [line.strip() for line in lines]
