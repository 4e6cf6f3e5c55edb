"""The stream a `/v1/messages` client receives: Anthropic's event grammar.

An `Egress` (proxy/core/sse.py) that turns the OpenAI `chat.completion.chunk`
objects every translated upstream yields into Anthropic's events:
`message_start` and a `ping` first; each run of reasoning, text or one tool
call as a content block (`content_block_start`, `thinking_delta` /
`text_delta` / `input_json_delta`, `content_block_stop`); at the end one
`message_delta` with the stop reason and the cumulative usage, then
`message_stop`. Usage is only known at the end on these upstreams, so
`message_start` reports 0 tokens and `message_delta` the real counts (input
included, which the SDKs take from it). A failure after the stream began is
an `error` event, as Anthropic sends it.

When an attempt goes to an Anthropic upstream the chunks are that upstream's
own event data (translators/inbound_messages_native.py) and pass unchanged,
each framed with its `type` as the event name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import orjson

from translators.inbound_messages_reply import (
    error_payload,
    message_id,
    stop_reason,
    tool_id,
    usage_of,
)

if TYPE_CHECKING:
    from proxy.core.errors import GatewayError
    from proxy.core.usage import Usage

PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class Mode(Protocol):
    native: bool  # the current attempt goes to an Anthropic upstream


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def native_frame(data: bytes) -> bytes:
    """An Anthropic upstream's event data, framed under its own `type` (the event name
    always equals it in Anthropic's grammar). The data is one line of valid JSON:
    the native adapter re-encoded anything else."""
    if data.startswith(b'{"type":"'):
        end = data.find(b'"', 9)
        if end > 9:
            return b"event: " + data[9:end] + b"\ndata: " + data + b"\n\n"
    kind = orjson.loads(data).get("type")
    name = kind.encode() if isinstance(kind, str) and kind.isprintable() else b"message"
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


class MessagesEgress:
    """One per request; `mode.native` is set by each attempt's adapter."""

    __slots__ = ("_index", "_open", "_refusal", "_started", "_stop", "_tools", "mode",
                 "request_id")

    def __init__(self, mode: Mode, request_id: str) -> None:
        self.mode = mode
        self.request_id = request_id
        self._started = False
        self._index = -1  # the last content block started
        self._open: str | None = None  # "text", "thinking" or "tool"
        self._tools: dict[int, int] = {}  # OpenAI tool-call index → content block index
        self._stop: str | None = None
        self._refusal = False

    # --- the Egress protocol -------------------------------------------------------

    def frames(self, chunks: list[bytes]) -> bytes:
        if self.mode.native:
            return b"".join(native_frame(data) for data in chunks)
        out: list[bytes] = []
        for raw in chunks:
            chunk = orjson.loads(raw)
            if isinstance(chunk, dict):
                self._chunk(chunk, out)
        return b"".join(out)

    def done(self, usage: "Usage | None") -> bytes:
        if self.mode.native:
            return b""  # the upstream's own message_stop has gone out
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        self._close(out)
        reason = "refusal" if self._refusal else (self._stop or "end_turn")
        out.append(event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": usage_of(usage)}))
        out.append(_STOP)
        return b"".join(out)

    def error(self, error: "GatewayError") -> bytes:
        return event("error", error_payload(error, self.request_id))

    # --- chunks → events -------------------------------------------------------------

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            self._start(chunk, out)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or (choice.get("index") or 0) != 0:
                continue  # one choice: Messages has no `n`
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if finish:
                self._stop = stop_reason(finish, bool(self._tools))
                self._close(out)

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            self._block("thinking", out)
            out.append(self._delta_event({"type": "thinking_delta", "thinking": reasoning}))
        for field in ("content", "refusal"):
            text = delta.get(field)
            if isinstance(text, str) and text:
                self._block("text", out)
                out.append(self._delta_event({"type": "text_delta", "text": text}))
                self._refusal = self._refusal or field == "refusal"
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_call(call, out)

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        k = call.get("index") if isinstance(call.get("index"), int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        block = self._tools.get(k)
        if block is None:
            self._close(out)
            self._index += 1
            block = self._tools[k] = self._index
            self._open = "tool"
            out.append(event("content_block_start", {
                "type": "content_block_start", "index": block,
                "content_block": {"type": "tool_use", "id": tool_id(call.get("id")),
                                  "name": str(function.get("name") or ""), "input": {}}}))
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            # A fragment of an earlier call (servers that interleave calls) goes to
            # that call's block, which the SDKs' accumulators address by index.
            out.append(event("content_block_delta", {
                "type": "content_block_delta", "index": block,
                "delta": {"type": "input_json_delta", "partial_json": fragment}}))

    def _block(self, kind: str, out: list[bytes]) -> None:
        if self._open == kind:
            return
        self._close(out)
        self._index += 1
        self._open = kind
        block = {"type": "text", "text": ""} if kind == "text" else \
            {"type": "thinking", "thinking": "", "signature": ""}
        out.append(event("content_block_start", {"type": "content_block_start",
                                                 "index": self._index, "content_block": block}))

    def _delta_event(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta",
                                             "index": self._index, "delta": delta})

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop",
                                                    "index": self._index}))
            self._open = None

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        out.append(event("message_start", {"type": "message_start", "message": {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": str(chunk.get("model") or ""), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}))
        out.append(PING)
