"""Gemini `GenerateContentResponse` objects → OpenAI completions and chunks.

A Gemini stream is a series of full response objects, each holding only the
new parts; so one mapping serves both: `completion` for a whole answer,
`GeminiStream.feed` for one streamed object. Text parts become content,
`thought: true` parts reasoning_content, `functionCall` parts whole tool calls
(Gemini never splits them) with a synthesized id unless Gemini sent one, and
the call's `thoughtSignature` rides inside that id. Usage is cumulative:
the last `usageMetadata` wins. Chunks are encoded by one ChunkEncoder per
stream (proxy/core/chunks.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.core.chunks import ChunkEncoder
from proxy.core.errors import UpstreamError
from proxy.core.usage import Usage, token_count
from translators.base import StreamState
from translators.gemini_request import call_id

_FILTERED = frozenset({"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT",
                       "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})


def finish_reason(reason: str, saw_calls: bool) -> str:
    """Gemini finishReason → OpenAI's; anything unknown (OTHER, MALFORMED_FUNCTION_CALL, …)
    ends as `stop`."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if saw_calls else "stop"


def gemini_usage(raw: dict[str, Any]) -> Usage:
    """usageMetadata → OpenAI usage: thoughts count as completion (and reasoning) tokens."""
    thoughts = token_count(raw.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=token_count(raw.get("promptTokenCount"))
        + token_count(raw.get("toolUsePromptTokenCount")),
        completion_tokens=token_count(raw.get("candidatesTokenCount")) + thoughts,
        cached_tokens=token_count(raw.get("cachedContentTokenCount")), reasoning_tokens=thoughts)


class CallIds:
    """Synthesized call ids `call_<24 hex>`: a random prefix per answer and a counter."""

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = "call_" + secrets.token_hex(8)
        self._next = 0

    def openai_id(self, call: dict[str, Any], signature: Any) -> str:
        given = call.get("id")
        if isinstance(given, str) and given:
            base = given
        else:
            base = f"{self._prefix}{self._next:08x}"
            self._next += 1
        return call_id(base, signature if isinstance(signature, str) else None)


def _tool_call(part: dict[str, Any], ids: CallIds) -> dict[str, Any]:
    call = part["functionCall"]
    return {"id": ids.openai_id(call, part.get("thoughtSignature")), "type": "function",
            "function": {"name": call.get("name") or "",
                         "arguments": orjson.dumps(call.get("args") or {}).decode()}}


def completion(answer: dict[str, Any], n: int) -> tuple[dict[str, Any], Usage]:
    """A whole GenerateContentResponse → an OpenAI chat.completion and its usage."""
    ids = CallIds()
    choices = []
    for candidate in answer.get("candidates") or []:
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                calls.append(_tool_call(part, ids))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(texts) if texts or not calls else None,
                                   "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        choices.append({"index": candidate.get("index") or 0, "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason(candidate.get("finishReason") or "STOP",
                                                       bool(calls))})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices = [{"index": i, "message": {"role": "assistant", "content": None,
                                            "refusal": None, "annotations": []},
                    "logprobs": None, "finish_reason": "content_filter"} for i in range(n)]
    usage = gemini_usage(answer.get("usageMetadata") or {})
    return {"id": "chatcmpl-" + str(answer.get("responseId") or secrets.token_hex(12)),
            "object": "chat.completion", "created": int(time.time()),
            "model": answer.get("modelVersion") or "", "choices": choices,
            "usage": usage.to_openai(), "system_fingerprint": None}, usage


class GeminiStream:
    """The per-stream state: `feed` takes one parsed streamed response object."""

    __slots__ = ("_encoder", "_finished", "_ids", "_started", "_streamed", "_tools",
                 "_usage_raw", "include_usage", "n", "raise_error", "state")

    def __init__(self, state: StreamState, include_usage: bool, n: int,
                 raise_error: Callable[[dict[str, Any]], UpstreamError]) -> None:
        self.state = state
        self.include_usage = include_usage
        self.n = n
        self.raise_error = raise_error
        self._encoder: ChunkEncoder | None = None  # from the first answer object on
        self._ids = CallIds()
        self._started: set[int] = set()
        self._tools: dict[int, int] = {}  # candidate index → tool calls so far
        self._finished: set[int] = set()
        self._usage_raw: dict[str, Any] | None = None
        self._streamed = 0  # characters of deltas sent: the output estimate of a cut stream

    def usage(self) -> Usage | None:
        return gemini_usage(self._usage_raw) if self._usage_raw is not None else None

    def partial_usage(self) -> Usage | None:
        """A stream cut short: Gemini's interim usageMetadata carries the prompt but
        rarely the output, so the output is at least what was streamed (~4 chars a token)."""
        usage = self.usage()
        if usage is None:
            return None
        if not self.state.complete:
            usage.completion_tokens = max(usage.completion_tokens, self._streamed // 4)
            usage.estimated = True
        return usage

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        assert self._encoder is not None  # made by feed() before anything is emitted
        return self._encoder.chunk(delta, index, finish)

    def feed(self, answer: dict[str, Any]) -> tuple[list[bytes], Usage | None]:
        if "error" in answer:
            raise self.raise_error(answer)
        if self._encoder is None:
            self._encoder = ChunkEncoder(
                "chatcmpl-" + str(answer.get("responseId") or secrets.token_hex(12)),
                int(time.time()), answer.get("modelVersion") or "",
                include_usage=self.include_usage, system_fingerprint=None)
        raw_usage = answer.get("usageMetadata")
        if isinstance(raw_usage, dict):
            self._usage_raw = raw_usage
        out: list[bytes] = []
        candidates = answer.get("candidates")
        if candidates:
            for candidate in candidates:
                self._candidate(candidate, out)
        elif (answer.get("promptFeedback") or {}).get("blockReason"):
            for index in range(self.n):
                if index not in self._finished:
                    self._start(index, out)
                    self._finish(index, "content_filter", out)
        usage = self.usage() if raw_usage is not None else None
        if len(self._finished) >= self.n and not self.state.complete:
            out += self.complete()
        return out, usage

    def complete(self) -> list[bytes]:
        """The stream's proper end: every choice finished (the usage chunk if asked)."""
        self.state.complete = True
        usage = self.usage()
        if not (self.include_usage and usage is not None and self._encoder is not None):
            return []
        return [self._encoder.usage(usage.to_openai())]

    def _start(self, index: int, out: list[bytes]) -> None:
        if index not in self._started:
            self._started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))

    def _finish(self, index: int, finish: str, out: list[bytes]) -> None:
        self._finished.add(index)
        self.state.finish_reason = finish
        self.state.has_content = True
        out.append(self._chunk(index, {}, finish))

    def _candidate(self, candidate: dict[str, Any], out: list[bytes]) -> None:
        index = candidate.get("index") or 0
        if index in self._finished:
            return
        self._start(index, out)
        state = self.state
        for part in (candidate.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                k = self._tools.get(index, 0)
                self._tools[index] = k + 1
                call = _tool_call(part, self._ids)
                self._streamed += len(call["function"]["arguments"]) + len(call["function"]["name"])
                out.append(self._chunk(index, {"tool_calls": [{"index": k, **call}]}))
                state.has_content = True
                continue
            text = part.get("text")
            if text:
                self._streamed += len(text)
                out.append(self._chunk(index, {"reasoning_content": text} if part.get("thought")
                                       else {"content": text}))
                state.has_content = True
        reason = candidate.get("finishReason")
        if reason:
            self._finish(index, finish_reason(reason, index in self._tools), out)
