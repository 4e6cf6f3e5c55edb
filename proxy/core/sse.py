"""The one writer of server-sent events to clients, and the hook for other client wire formats.

Every stream a client receives (a relayed upstream, a cache replay) is written
through an `Egress`. `None` on the Exchange means OpenAI chat-completions, the
internal format: chunks go out as `data: {chunk}` frames with no extra work,
and a relay may even pass an OpenAI upstream's own bytes through. An inbound
API with its own wire format (the Responses API, Anthropic's Messages API)
sets an Egress that turns the same OpenAI chunk objects into its own events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import orjson

if TYPE_CHECKING:
    from proxy.core.errors import GatewayError
    from proxy.core.usage import Usage

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8",
               "cache-control": "no-cache", "x-accel-buffering": "no"}


def encode_frames(chunks: Sequence[bytes]) -> bytes:
    """OpenAI chunk JSON objects (already encoded) as SSE `data:` frames."""
    if not chunks:
        return b""
    return b"data: " + b"\n\ndata: ".join(chunks) + b"\n\n"


def error_frame(error: "GatewayError") -> bytes:
    """The event that ends a failed OpenAI stream (no `[DONE]` follows it)."""
    return b"data: " + orjson.dumps({"error": error.payload()}) + b"\n\n"


class Egress(Protocol):
    """A client wire format for streams, one instance per request (it holds the
    client stream's state, e.g. sequence numbers and open content blocks)."""

    def frames(self, chunks: list[bytes]) -> bytes:
        """OpenAI `chat.completion.chunk` JSON objects → the bytes to write."""

    def done(self, usage: "Usage | None") -> bytes:
        """The end of a complete stream (OpenAI: `data: [DONE]`)."""

    def error(self, error: "GatewayError") -> bytes:
        """The end of a stream that failed after it began."""
