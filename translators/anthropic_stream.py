"""Anthropic's streaming grammar → OpenAI chat.completion.chunk objects.

message_start → the role chunk; text / thinking / tool_use blocks → content,
reasoning_content and tool-call deltas (OpenAI tool index = count of tool_use
blocks so far, never Anthropic's block index); message_delta → the one finish
chunk; message_stop → the usage chunk if asked, and the stream is complete.
ping, signature/citation deltas, block stops and unknown events produce
nothing. Chunks are encoded by one ChunkEncoder per stream (proxy/core/chunks.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.core.chunks import ChunkEncoder
from proxy.core.errors import UpstreamError
from proxy.core.usage import Usage, token_count
from translators.anthropic_thinking import carry, kept
from translators.base import StreamState

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                "max_tokens": "length", "model_context_window_exceeded": "length",
                "tool_use": "tool_calls", "refusal": "content_filter"}

_TEXT, _TOOL, _JSON, _THINKING = 1, 2, 3, 4
_NEEDS_START = frozenset({"content_block_start", "content_block_delta", "message_delta",
                          "message_stop"})


def chunk_id(message_id: str) -> str:
    return "chatcmpl-" + (message_id.removeprefix("msg_"))


def anthropic_usage(raw: dict[str, Any]) -> Usage:
    """Anthropic usage → OpenAI's: cache reads and writes count as prompt tokens, and
    the writes are kept apart (with their 1-hour part) since they cost more than input."""
    cached = token_count(raw.get("cache_read_input_tokens"))
    writes = token_count(raw.get("cache_creation_input_tokens"))
    detail = raw.get("cache_creation")
    long_writes = token_count(detail.get("ephemeral_1h_input_tokens")) \
        if isinstance(detail, dict) else 0
    prompt = token_count(raw.get("input_tokens")) + writes + cached
    return Usage(prompt_tokens=prompt, completion_tokens=token_count(raw.get("output_tokens")),
                 cached_tokens=cached, cache_write_tokens=writes,
                 cache_write_1h_tokens=min(long_writes, writes))




class AnthropicStream:
    """The per-stream state machine; `feed` takes one parsed event."""

    __slots__ = (
        "_blocks",
        "_encoder",
        "_finished",
        "_pending",
        "_started",
        "_streamed",
        "_tools",
        "_usage_raw",
        "include_usage",
        "json_tool",
        "raise_error",
        "state",
    )

    def __init__(self, state: StreamState, include_usage: bool, json_tool: bool,
                 raise_error: Callable[[dict[str, Any]], UpstreamError]) -> None:
        self.state = state
        self.include_usage = include_usage
        self.json_tool = json_tool
        self.raise_error = raise_error
        self._encoder: ChunkEncoder | None = None  # from message_start on
        self._blocks: dict[int, tuple[int, int]] = {}  # block index → (kind, tool index)
        # Thinking blocks since the last tool call, kept whole to ride in its id
        # (translators/anthropic_thinking.py); filled in by their deltas.
        self._pending: list[tuple[Any, dict[str, Any]]] = []  # (block index, block)
        self._tools = 0
        self._usage_raw: dict[str, Any] = {}
        self._finished = False
        self._started = False
        self._streamed = 0  # bytes of deltas sent: the output estimate of a cut stream

    def usage(self) -> Usage | None:
        return anthropic_usage(self._usage_raw) if self._usage_raw else None

    def partial_usage(self) -> Usage | None:
        """A stream cut short: Anthropic reports cumulative output only at the end, so
        the output is at least what was streamed (about four characters a token)."""
        usage = self.usage()
        if usage is None:
            return None
        usage.completion_tokens = max(usage.completion_tokens, self._streamed // 4)
        usage.estimated = True
        return usage

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        assert self._encoder is not None  # feed() lets nothing that emits before message_start
        body = orjson.dumps(delta)
        self._streamed += len(body) - 14  # less the ~14 bytes of {"content":""}
        return self._encoder.encoded(body)

    def feed(self, event: dict[str, Any]) -> tuple[list[bytes], Usage | None]:
        kind = event.get("type")
        if kind == "content_block_delta" and self._started:  # most of a stream: text
            delta = event.get("delta")
            if type(delta) is dict and delta.get("type") == "text_delta":
                text = delta.get("text")
                if text and type(text) is str:  # as `_content` would, one call less
                    self.state.has_content = True
                    body = orjson.dumps(text)
                    self._streamed += len(body) - 2
                    return [self._encoder.encoded(b'{"content":' + body + b"}")], None
        if not self._started and kind in _NEEDS_START:
            raise ValueError(f"'{kind}' arrived before message_start")
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {}), None
        if kind == "content_block_start":
            return self._start(event.get("index"), event.get("content_block") or {}), None
        if kind == "message_delta":
            return self._message_delta(event), None
        if kind == "message_start":
            return self._message_start(event.get("message") or {}), None
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            raise self.raise_error(event)
        return [], None  # ping, content_block_stop, and events added after this was written

    def _message_start(self, message: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        self._usage_raw = dict(message.get("usage") or {})
        self._encoder = ChunkEncoder(chunk_id(str(message.get("id") or "")), int(time.time()),
                                     message.get("model") or "",
                                     include_usage=self.include_usage, system_fingerprint=None)
        return [self._chunk({"role": "assistant", "content": ""})]

    def _start(self, index: Any, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = (_TEXT, 0)
            return self._content(block.get("text"))
        if kind == "tool_use":
            if self.json_tool:
                self._blocks[index] = (_JSON, 0)
                return []
            k = self._tools
            self._tools += 1
            self._blocks[index] = (_TOOL, k)
            self.state.has_content = True
            call_id = carry(block.get("id"), [carried for _, carried in self._pending])
            self._pending = []
            return [self._chunk({"tool_calls": [{
                "index": k, "id": call_id, "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}]})]
        if kind in ("thinking", "redacted_thinking"):
            self._pending.append((index, kept(block)))  # type: ignore[arg-type]
        if kind == "thinking":
            self._blocks[index] = (_THINKING, 0)
            thinking = block.get("thinking")
            if thinking:
                self.state.has_content = True
                return [self._chunk({"reasoning_content": thinking})]
        return []

    def _content(self, text: Any) -> list[bytes]:
        if not text:
            return []
        self.state.has_content = True
        return [self._chunk({"content": text})]

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[bytes]:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._content(delta.get("text"))
        if kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if not fragment:
                return []
            block_kind, k = self._blocks.get(index, (_TOOL, 0))
            if block_kind == _JSON:
                return self._content(fragment)
            self.state.has_content = True
            return [self._chunk({"tool_calls": [{"index": k,
                                                 "function": {"arguments": fragment}}]})]
        if kind in ("thinking_delta", "signature_delta"):
            carried = self._carried(index)
            field = "thinking" if kind == "thinking_delta" else "signature"
            value = delta.get(field)
            if carried is not None and isinstance(value, str):
                carried[field] = carried[field] + value if field == "thinking" else value
            if kind == "thinking_delta" and value:
                self.state.has_content = True
                return [self._chunk({"reasoning_content": value})]
        return []  # citations_delta, future delta types

    def _carried(self, index: Any) -> dict[str, Any] | None:
        for at, block in reversed(self._pending):
            if at == index:
                return block
        return None

    def _message_delta(self, event: dict[str, Any]) -> list[bytes]:
        usage = event.get("usage")
        if isinstance(usage, dict):  # cumulative counts: the latest wins
            self._usage_raw.update({k: v for k, v in usage.items() if v is not None})
        reason = (event.get("delta") or {}).get("stop_reason")
        if reason is None or self._finished:
            return []
        finish = STOP_REASONS.get(reason, "stop")
        if finish == "tool_calls" and self.json_tool:
            finish = "stop"
        self._finished = True
        self.state.finish_reason = finish
        self.state.has_content = True
        assert self._encoder is not None
        return [self._encoder.chunk({}, finish=finish)]

    def _message_stop(self) -> tuple[list[bytes], Usage | None]:
        self.state.complete = True
        out: list[bytes] = []
        if not self._finished:  # a message_stop without a stop reason: still one finish
            out += self._message_delta({"delta": {"stop_reason": "end_turn"}})
        usage = self.usage()
        if self.include_usage and usage is not None and self._encoder is not None:
            out.append(self._encoder.usage(usage.to_openai()))
        return out, usage
