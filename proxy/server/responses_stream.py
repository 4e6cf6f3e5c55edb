"""The Responses API's stream grammar, as the Egress of `POST /v1/responses`.

Chat completion chunks (from any translator) become OpenAI's events:
response.created, response.in_progress, then per output item
output_item.added → (content_part.added → output_text.delta… →
output_text.done → content_part.done | reasoning_summary_part.added →
reasoning_summary_text.delta… → .done → reasoning_summary_part.done |
function_call_arguments.delta… → .done) → output_item.done, and finally
response.completed or response.incomplete; a stream that fails after it began
ends with response.failed. Every event carries its `sequence_number`. A native
upstream's events pass through as they came, each framed once.

One item is open at a time, as OpenAI streams them, except that tool calls
arriving together stay open together (some upstreams interleave their
arguments) and close at the next text or the finish.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.core.errors import GatewayError
from proxy.core.usage import Usage
from proxy.server.responses_call import ResponsesCall
from proxy.server.responses_items import new_id, own_reasoning_id
from proxy.server.responses_output import INCOMPLETE, failed, finish, skeleton, text_part


def frame(kind: str, data: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class ResponsesEgress:
    """One per request (proxy/core/sse.py's Egress protocol)."""

    def __init__(self, call: ResponsesCall) -> None:
        self.call = call
        self.seq = 0
        self.response: dict[str, Any] | None = None
        self.items: list[dict[str, Any]] = []  # every output item, as it stands
        self.open: list[int] = []  # output indexes of open items, in order
        self.tools: dict[int, int] = {}  # chat tool-call index → output index
        self.finish_reason: str | None = None
        self.model = call.req.model

    # --- the Egress protocol -------------------------------------------------------------

    def frames(self, chunks: list[bytes]) -> bytes:
        if self.call.native:
            return b"".join(frame(_event_type(c), c) for c in chunks)
        out: list[bytes] = []
        for raw in chunks:
            # An OpenAI-compatible upstream's chunks arrive as it sent them: whatever
            # is not the shape a chunk has is skipped, never a crash mid-stream.
            chunk = orjson.loads(raw)
            if not isinstance(chunk, dict):
                continue
            if self.response is None:
                self.model = str(chunk.get("model") or self.model)
                self._start(out)
            choices = chunk.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices else None
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            for key, emit in (("reasoning_content", self._reasoning),
                              ("content", self._output_text), ("refusal", self._refusal)):
                if delta.get(key) and isinstance(delta[key], str):
                    emit(out, delta[key])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool(out, call)
            if choice.get("finish_reason") and isinstance(choice["finish_reason"], str):
                self.finish_reason = choice["finish_reason"]
                self._close(out, list(self.open))
        if self.response is None:
            self._start(out)
        return b"".join(out)

    def done(self, usage: Usage | None) -> bytes:
        if self.call.native:
            return b""
        out: list[bytes] = []
        if self.response is None:
            self._start(out)
        self._close(out, list(self.open))
        final = finish(self.response, self.items, self.finish_reason, usage)
        self.call.final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        self._emit(out, kind, response=final)
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        if self.call.native:
            return self._native_error(error)
        out: list[bytes] = []
        if self.response is None:
            self._start(out)
        for index in self.open:
            self.items[index]["status"] = "incomplete"
        if self.open:
            _trim_open(self.items, self.open)
        final = failed(self.response, self.items, error)
        self.call.final = final
        self._emit(out, "response.failed", response=final)
        return b"".join(out)

    # --- events ------------------------------------------------------------------------

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        data = orjson.dumps({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        out.append(frame(kind, data))

    def _start(self, out: list[bytes]) -> None:
        self.response = skeleton(self.call.req, new_id("resp"), int(time.time()), self.model)
        self._emit(out, "response.created", response=self.response)
        self._emit(out, "response.in_progress", response=self.response)

    def _add(self, out: list[bytes], item: dict[str, Any]) -> int:
        index = len(self.items)
        self.items.append(item)
        self.open.append(index)
        self._emit(out, "response.output_item.added", output_index=index, item=dict(item))
        return index

    def _current(self, kind: str) -> dict[str, Any] | None:
        if len(self.open) == 1 and self.items[self.open[0]]["type"] == kind:
            return self.items[self.open[0]]
        return None

    def _reasoning(self, out: list[bytes], text: str) -> None:
        item = self._current("reasoning")
        if item is None:
            self._close(out, list(self.open))
            item = {"id": own_reasoning_id(), "type": "reasoning", "summary": []}
            index = self._add(out, item)
            item["summary"] = [{"type": "summary_text", "text": ""}]
            self._emit(out, "response.reasoning_summary_part.added", item_id=item["id"],
                       output_index=index, summary_index=0,
                       part={"type": "summary_text", "text": ""})
        item["summary"][0]["text"] += text
        self._emit(out, "response.reasoning_summary_text.delta", item_id=item["id"],
                   output_index=self.open[0], summary_index=0, delta=text)

    def _output_text(self, out: list[bytes], text: str) -> None:
        self._text(out, "output_text", text)

    def _refusal(self, out: list[bytes], text: str) -> None:
        self._text(out, "refusal", text)

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        item = self._current("message")
        if item is None:
            self._close(out, list(self.open))
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress",
                    "content": [], "role": "assistant"}
            self._add(out, item)
        index = self.open[0]
        parts = item["content"]
        if not parts or parts[-1]["type"] != kind:
            if parts:
                self._part_done(out, item, index)
            parts.append(text_part("") if kind == "output_text"
                         else {"type": "refusal", "refusal": ""})
            self._emit(out, "response.content_part.added", item_id=item["id"],
                       output_index=index, content_index=len(parts) - 1, part=dict(parts[-1]))
        part = parts[-1]
        if kind == "output_text":
            part["text"] += text
            self._emit(out, "response.output_text.delta", item_id=item["id"],
                       output_index=index, content_index=len(parts) - 1, delta=text,
                       logprobs=[])
        else:
            part["refusal"] += text
            self._emit(out, "response.refusal.delta", item_id=item["id"], output_index=index,
                       content_index=len(parts) - 1, delta=text)

    def _tool(self, out: list[bytes], call: dict[str, Any]) -> None:
        position = call.get("index", 0)
        position = position if isinstance(position, int) else 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index = self.tools.get(position)
        if index is None or index not in self.open:
            if any(self.items[i]["type"] != "function_call" for i in self.open):
                self._close(out, list(self.open))
            call_id, name = call.get("id"), function.get("name")
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "arguments": "",
                    "call_id": call_id if isinstance(call_id, str) and call_id
                    else new_id("call"), "name": name if isinstance(name, str) else ""}
            index = self.tools[position] = self._add(out, item)
        item = self.items[index]
        arguments = function.get("arguments")
        if arguments and isinstance(arguments, str):
            item["arguments"] += arguments
            self._emit(out, "response.function_call_arguments.delta", item_id=item["id"],
                       output_index=index, delta=arguments)

    # --- closing -----------------------------------------------------------------------

    def _part_done(self, out: list[bytes], item: dict[str, Any], index: int) -> None:
        part = item["content"][-1]
        at = len(item["content"]) - 1
        if part["type"] == "output_text":
            self._emit(out, "response.output_text.done", item_id=item["id"], output_index=index,
                       content_index=at, text=part["text"], logprobs=[])
        else:
            self._emit(out, "response.refusal.done", item_id=item["id"], output_index=index,
                       content_index=at, refusal=part["refusal"])
        self._emit(out, "response.content_part.done", item_id=item["id"], output_index=index,
                   content_index=at, part=dict(part))

    def _close(self, out: list[bytes], indexes: list[int]) -> None:
        for index in indexes:
            item = self.items[index]
            kind = item["type"]
            if kind == "message":
                if item["content"]:
                    self._part_done(out, item, index)
                item["status"] = "incomplete" if self.finish_reason in INCOMPLETE else "completed"
            elif kind == "reasoning":
                summary = item["summary"][0]
                self._emit(out, "response.reasoning_summary_text.done", item_id=item["id"],
                           output_index=index, summary_index=0, text=summary["text"])
                self._emit(out, "response.reasoning_summary_part.done", item_id=item["id"],
                           output_index=index, summary_index=0, part=dict(summary))
            else:
                self._emit(out, "response.function_call_arguments.done", item_id=item["id"],
                           output_index=index, arguments=item["arguments"])
                item["status"] = "completed"
            self._emit(out, "response.output_item.done", output_index=index, item=item)
            self.open.remove(index)

    # --- native ------------------------------------------------------------------------

    def _native_error(self, error: GatewayError) -> bytes:
        state = self.call.stream_state
        if state is None or state.response is None:
            self.call.native = False  # nothing of the upstream's reached the client
            return self.error(error)
        output = [state.done_items[i] for i in sorted(state.done_items)]
        final = failed(state.response, output, error)
        self.call.final = final
        data = orjson.dumps({"type": "response.failed",
                             "sequence_number": state.last_sequence + 1, "response": final})
        return frame("response.failed", data)


def _trim_open(items: list[dict[str, Any]], indexes: list[int]) -> None:
    """Open items of a failed stream, as they stood: summaries without the empty start."""
    for index in indexes:
        item = items[index]
        if item["type"] == "reasoning" and not item["summary"][0]["text"]:
            item["summary"] = []


def _event_type(data: bytes) -> str:
    """An upstream event's `type` (OpenAI writes it first, so usually no parse)."""
    if data.startswith(b'{"type":"'):
        end = data.find(b'"', 9)
        if end > 9:
            return data[9:end].decode()
    try:
        kind = orjson.loads(data).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    # printable only: a name holding a newline would add lines of its own to the frame
    return kind if isinstance(kind, str) and kind.isprintable() else "message"
