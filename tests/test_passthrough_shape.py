"""An OpenAI stream's plain deltas passed through by their shape (the head learned from
one parsed chunk) reach the client exactly as translating each event would send them."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.framing import Event, SSEParser
from proxy.core.sse import encode_frames
from translators.openai import OpenAITranslator

_HEAD = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
         "model": "gpt-4o-mini", "system_fingerprint": "fp_x"}


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return orjson.dumps({**_HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                               "finish_reason": finish}], "usage": None})


def _translator(include_usage: bool) -> OpenAITranslator:
    translator = OpenAITranslator(ProviderConfig("p", "openai", "https://up.example",
                                                 api_key="k"))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    translator.request(body, TargetConfig("p", "m"), stream=True)
    return translator


def _client_bytes(events: list[bytes], include_usage: bool, passthrough: bool
                  ) -> tuple[bytes, int]:
    """The first two events parsed (the commit), the rest as one read."""
    translator = _translator(include_usage)
    out = b""
    for data in events[:2]:
        out += encode_frames(translator.stream(Event(None, data))[0])
    block = b"".join(b"data: " + data + b"\n\n" for data in events[2:])
    fast, used = translator.passthrough(block) if passthrough else (b"", 0)
    out += fast
    for event in SSEParser.parse_complete(block[used:]):
        out += encode_frames(translator.stream(event)[0])
    return out, translator._chunks


_ODD = ['say "hi"', "ends in \\", "ü ✓ \n tab\t", "", "a/b", "\\\"", " \"", "x"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_shaped_passthrough_matches_translating_each_event(include_usage):
    texts = ["Sure", "!", *_ODD, " plain", " again"]
    events = [_chunk({"role": "assistant", "content": ""}),
              *(_chunk({"content": text}) for text in texts),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
              _chunk({"content": "after"}), _chunk({"content": "a", "reasoning": "b"}),
              _chunk({"content": "c"}), _chunk({"content": "d"}, "length"),
              _chunk({"content": "e"}), _chunk({}, "stop"),
              orjson.dumps({**_HEAD, "choices": [], "usage": {"prompt_tokens": 1,
                                                                "completion_tokens": 2,
                                                                "total_tokens": 3}}),
              b"[DONE]"]
    fast = _client_bytes(events, include_usage, passthrough=True)
    assert fast == _client_bytes(events, include_usage, passthrough=False)
    assert (b'"usage":null' in fast[0]) == include_usage
    assert b'"reasoning_content":"b"' in fast[0] and b'"reasoning"' not in fast[0]


def test_a_head_is_learned_only_from_a_plain_text_delta():
    translator = _translator(False)
    translator.stream(Event(None, _chunk({"role": "assistant", "content": ""})))
    assert translator._head is None  # two keys in its delta
    translator.stream(Event(None, _chunk({"content": "Sure"})))
    assert translator._head == b"data: " + _chunk({"content": "Sure"}).split(b'Sure"')[0]
    for odd in ({"content": "quote\" in it"}, {"content": "x", "reasoning": "y"},
                {"content": "x", "refusal": None}):
        translator = _translator(False)
        translator.stream(Event(None, _chunk({"role": "assistant", "content": ""})))
        translator.stream(Event(None, _chunk(odd)))
        assert translator._head is None  # not the shape the fast path checks


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=6), st.booleans(),
       st.integers(1, 400))
def test_any_text_any_split_the_same_bytes(texts, include_usage, size):
    """Whatever the content and wherever a read ends, the client's bytes are those of
    translating every event."""
    events = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Sure"}),
              *(_chunk({"content": text}) for text in texts), _chunk({}, "stop"), b"[DONE]"]
    expected = _client_bytes(events, include_usage, passthrough=False)
    translator = _translator(include_usage)
    out = b""
    for data in events[:2]:
        out += encode_frames(translator.stream(Event(None, data))[0])
    wire = b"".join(b"data: " + data + b"\n\n" for data in events[2:])
    parser = SSEParser()
    for at in range(0, len(wire), size):
        block = parser.split_complete(wire[at:at + size])
        fast, used = translator.passthrough(block)
        out += fast
        for event in SSEParser.parse_complete(block[used:]):
            out += encode_frames(translator.stream(event)[0])
    assert (out, translator._chunks) == expected


_TRICKY = [{"content": "a", "reasoning": "b"}, {"content": "a", "refusal": "b"},
           {"content": "a", "refusal": None}, {"content": None}, {"content": 'q"q'},
           {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("delta", _TRICKY)
@pytest.mark.parametrize("finish", [None, "length"])
def test_one_odd_event_among_plain_ones(delta, finish, include_usage):
    """An event shaped almost like a plain delta, alone among plain ones in one read,
    is still translated (renamed, finished) as it would be on its own."""
    events = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Sure"}),
              _chunk({"content": "x"}), _chunk(delta, finish), _chunk({"content": "y"}),
              _chunk({}, "stop"), b"[DONE]"]
    assert _client_bytes(events, include_usage, passthrough=True) \
        == _client_bytes(events, include_usage, passthrough=False)


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_lookalike_head_of_the_same_length_is_not_passed(include_usage, monkeypatch):
    """An event whose start differs from the learned head only in a key of the same
    length (here an error where the fingerprint was) is not a plain delta to the
    shape check (the counting scan it falls back to is checked here without)."""
    monkeypatch.setattr(OpenAITranslator, "_plain_counted", lambda self, block: (b"", 0))
    odd = orjson.dumps({**{k: v for k, v in _HEAD.items() if k != "system_fingerprint"},
                        "error": "0123456789abcdefg",
                        "choices": [{"index": 0, "delta": {"content": "z"}, "logprobs": None,
                                     "finish_reason": None}], "usage": None})
    assert len(odd) == len(_chunk({"content": "z"}))
    events = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Sure"}),
              _chunk({"content": "x"}), odd, _chunk({"content": "y"})]
    translator = _translator(include_usage)
    for data in events[:2]:
        translator.stream(Event(None, data))
    block = b"".join(b"data: " + data + b"\n\n" for data in events[2:])
    fast, used = translator.passthrough(block)
    assert b'"error"' not in fast and used == 0
