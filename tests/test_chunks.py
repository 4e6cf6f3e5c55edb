"""The one encoder of OpenAI chunks: its bytes are those of the whole chunk object."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.chunks import ChunkEncoder

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
_deltas = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "refusal",
                                           "reasoning_content", "x\u2028\"y"]), _json,
                          max_size=4)
_fields = st.dictionaries(st.sampled_from(["service_tier", "system_fingerprint", "obfuscation"]),
                          _json, max_size=3)
_ids = st.none() | st.text() | st.integers(-2**53, 2**53)


def _whole(id, created, model, fields, choices, usage_key, usage=None):
    chunk = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
             **fields, "choices": choices}
    if usage_key:
        chunk["usage"] = usage
    return orjson.dumps(chunk)


@given(_ids, st.integers(0, 2**40) | st.none(), st.text(), _fields, st.booleans(), _deltas,
       st.integers(0, 300), st.none() | st.sampled_from(["stop", "length", "tool_calls"]) |
       st.text(), st.none() | _json)
def test_chunk_bytes_are_the_whole_object(id, created, model, fields, include_usage, delta,
                                          index, finish, logprobs):
    enc = ChunkEncoder(id, created, model, include_usage=include_usage, **fields)
    expected = _whole(id, created, model, fields,
                      [{"index": index, "delta": delta, "logprobs": logprobs,
                        "finish_reason": finish}], include_usage)
    assert enc.chunk(delta, index, finish, logprobs) == expected
    assert enc.encoded(orjson.dumps(delta), index, finish, logprobs) == expected


@given(_ids, st.integers(0, 2**40), st.text(), _fields, st.booleans(), _json)
def test_usage_chunk_bytes(id, created, model, fields, include_usage, usage):
    enc = ChunkEncoder(id, created, model, include_usage=include_usage, **fields)
    assert enc.usage(usage) == _whole(id, created, model, fields, [], True, usage)


def test_the_bytes_the_translators_sent_before():
    """Pinned: the prefix the Anthropic, Gemini and Ollama translators hand-built."""
    enc = ChunkEncoder("chatcmpl-01", 1700000000, "claude", include_usage=True,
                       system_fingerprint=None)
    head = (b'{"id":"chatcmpl-01","object":"chat.completion.chunk","created":1700000000,'
            b'"model":"claude","system_fingerprint":null,')
    assert enc.chunk({"role": "assistant", "content": ""}) == head + (
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
        b'"finish_reason":null}],"usage":null}')
    assert enc.chunk({}, 1, "stop") == head + (
        b'"choices":[{"index":1,"delta":{},"logprobs":null,"finish_reason":"stop"}],'
        b'"usage":null}')
    assert enc.usage({"prompt_tokens": 1}) == head + b'"choices":[],"usage":{"prompt_tokens":1}}'
    quiet = ChunkEncoder("c", 1, "m", include_usage=False)
    assert quiet.chunk({"content": "hi"}).endswith(b'"finish_reason":null}]}')
