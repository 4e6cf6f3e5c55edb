"""The one encoder of OpenAI `chat.completion.chunk` objects.

Every OpenAI chunk gatewise makes itself - translated from Anthropic, Gemini
or Ollama, replayed from the cache, or sent by the offline mock upstream - is
encoded here; an OpenAI upstream's own chunks pass through untouched. The
fields all chunks of a stream share (id, object, created, model, and e.g.
system_fingerprint) are encoded once per stream, so a chunk costs one small
orjson.dumps of its delta. The bytes are exactly orjson.dumps of the whole
chunk object, key order included.
"""

from __future__ import annotations

from typing import Any

import orjson

OBJECT = "chat.completion.chunk"
_NULL_TAIL = b',"logprobs":null,"finish_reason":null}]'


class ChunkEncoder:
    """The chunks of one stream. `fields` follow id, object, created and model in
    every chunk, in the order given (e.g. `system_fingerprint=None`); with
    `include_usage` every chunk but the usage chunk says `"usage":null`, as OpenAI
    does when a client asks for the usage chunk."""

    __slots__ = ("_choices", "_close", "_head", "_open0", "_plain")

    def __init__(self, id: Any, created: Any, model: Any, *, include_usage: bool,
                 **fields: Any) -> None:
        head = orjson.dumps({"id": id, "object": OBJECT, "created": created, "model": model,
                             **fields})
        self._head = head[:-1]  # without its closing brace
        self._choices = self._head + b',"choices":[{"index":'
        self._open0 = self._choices + b'0,"delta":'
        self._close = b',"usage":null}' if include_usage else b"}"
        self._plain = _NULL_TAIL + self._close

    def chunk(self, delta: dict[str, Any], index: int = 0, finish: str | None = None,
              logprobs: Any = None) -> bytes:
        """One choice's delta (and its finish reason, on the last one)."""
        return self.encoded(orjson.dumps(delta), index, finish, logprobs)

    def encoded(self, delta: bytes, index: int = 0, finish: str | None = None,
                logprobs: Any = None) -> bytes:
        """`chunk` for a delta already encoded as JSON."""
        if index == 0 and finish is None and logprobs is None:  # most chunks of a stream
            return self._open0 + delta + self._plain
        return (self._choices + orjson.dumps(index) + b',"delta":' + delta + b',"logprobs":'
                + orjson.dumps(logprobs) + b',"finish_reason":' + orjson.dumps(finish) + b"}]"
                + self._close)

    def usage(self, usage: Any) -> bytes:
        """The usage chunk that ends a stream whose client asked for it (`choices: []`)."""
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}"
