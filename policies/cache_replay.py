"""Converting cached answers between the two forms a client may ask for.

An entry is always stored as one OpenAI `chat.completion` (JSON bytes), so it
can be replayed as JSON or as a valid SSE stream whatever form filled it. A
streamed answer is assembled from the chunks the client actually received.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.core.chunks import ChunkEncoder
from proxy.core.sse import DONE, encode_frames

_TEXT_FIELDS = ("content", "refusal", "reasoning_content")


class ChunkCollector:
    """A stream tap: keeps the chunk bytes the client got, up to `max_bytes`."""

    __slots__ = ("chunks", "finished", "max_bytes", "overflow", "size")

    def __init__(self, max_bytes: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.overflow = False
        self.finished = False  # a finish_reason was seen

    def __call__(self, batch: list[bytes]) -> None:
        if self.overflow:
            return
        for chunk in batch:
            self.size += len(chunk)
            if not self.finished and b'"finish_reason":"' in chunk:
                self.finished = True
        if self.size > self.max_bytes:
            self.overflow = True
            self.chunks = []
            return
        self.chunks += batch


def assemble(chunks: list[bytes], usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `chat.completion` equivalent of a complete stream, or None if any choice
    did not finish (or the stream carried an error)."""
    head: dict[str, Any] | None = None
    acc: dict[int, dict[str, Any]] = {}
    for raw in chunks:
        chunk = orjson.loads(raw)
        if not isinstance(chunk, dict) or "error" in chunk:
            return None
        if head is None:
            head = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            _absorb(acc.setdefault(int(choice.get("index") or 0), _new_choice()), choice)
    if head is None or not acc or any(c["finish_reason"] is None for c in acc.values()):
        return None
    completion: dict[str, Any] = {
        "id": head.get("id"), "object": "chat.completion", "created": head.get("created"),
        "model": head.get("model"),
        "choices": [_finish_choice(i, acc[i]) for i in sorted(acc)],
        "usage": usage,
    }
    for name in ("service_tier", "system_fingerprint"):
        if head.get(name) is not None:
            completion[name] = head[name]
    return completion


def _new_choice() -> dict[str, Any]:
    return {"role": "assistant", "content": [], "refusal": [], "reasoning_content": [],
            "calls": {}, "finish_reason": None, "logprobs": None}


def _absorb(acc: dict[str, Any], choice: dict[str, Any]) -> None:
    delta = choice.get("delta") or {}
    if delta.get("role"):
        acc["role"] = delta["role"]
    for name in _TEXT_FIELDS:
        piece = delta.get(name)
        if isinstance(piece, str):
            acc[name].append(piece)
    for call in delta.get("tool_calls") or ():
        slot = acc["calls"].setdefault(int(call.get("index") or 0),
                                       {"id": None, "type": "function", "name": "",
                                        "arguments": []})
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            slot["arguments"].append(function["arguments"])
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        merged = acc["logprobs"] or {"content": [], "refusal": None}
        merged["content"] += logprobs.get("content") or []
        acc["logprobs"] = merged
    if choice.get("finish_reason"):
        acc["finish_reason"] = choice["finish_reason"]


def _finish_choice(index: int, acc: dict[str, Any]) -> dict[str, Any]:
    calls = [acc["calls"][k] for k in sorted(acc["calls"])]
    message: dict[str, Any] = {
        "role": acc["role"],
        "content": "".join(acc["content"]) if acc["content"] or not calls else None,
        "refusal": "".join(acc["refusal"]) or None,
    }
    if acc["reasoning_content"]:
        message["reasoning_content"] = "".join(acc["reasoning_content"])
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": c["type"],
                                  "function": {"name": c["name"],
                                               "arguments": "".join(c["arguments"])}}
                                 for c in calls]
    return {"index": index, "message": message, "logprobs": acc["logprobs"],
            "finish_reason": acc["finish_reason"]}


def finished(completion: Any) -> bool:
    """A complete success: every choice has a finish reason."""
    if not isinstance(completion, dict):
        return False
    choices = completion.get("choices")
    return (isinstance(choices, list) and bool(choices)
            and all(isinstance(c, dict) and c.get("finish_reason") for c in choices))


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """The chunk JSON objects of a valid OpenAI stream for this completion: a role
    chunk, content, tool calls (whole, one delta each, OpenAI's `index`), the
    finish chunk per choice, and the usage chunk when the client asked for it."""
    encoder = ChunkEncoder(completion.get("id"), completion.get("created"),
                           completion.get("model"), include_usage=include_usage,
                           **{name: completion[name] for name in ("service_tier",
                                                                  "system_fingerprint")
                              if completion.get(name) is not None})
    out: list[bytes] = []

    def emit(index: int, delta: dict[str, Any], finish: str | None = None,
             logprobs: Any = None) -> None:
        out.append(encoder.chunk(delta, index, finish, logprobs))

    for choice in completion.get("choices") or ():
        index = choice.get("index") or 0
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        content = message.get("content")
        emit(index, {"role": message.get("role") or "assistant",
                     "content": "" if content is not None or not calls else None,
                     "refusal": None})
        if message.get("reasoning_content"):
            emit(index, {"reasoning_content": message["reasoning_content"]})
        if content:
            emit(index, {"content": content}, logprobs=choice.get("logprobs"))
        if message.get("refusal"):
            emit(index, {"refusal": message["refusal"]})
        for k, call in enumerate(calls):
            function = call.get("function") or {}
            emit(index, {"tool_calls": [{
                "index": k, "id": call.get("id"), "type": call.get("type") or "function",
                "function": {"name": function.get("name"),
                             "arguments": function.get("arguments") or ""}}]})
        emit(index, {}, choice.get("finish_reason"))
    if include_usage:
        out.append(encoder.usage(completion.get("usage")))
    return out


def sse_body(chunks: list[bytes]) -> bytes:
    return encode_frames(chunks) + DONE
