"""A faithful fake of Anthropic's `POST /v1/messages`, scriptable per request.

It checks the key (`x-api-key`, or `Authorization: Bearer` as newer SDKs
send it) and `anthropic-version`, validates the body as strictly
as the real API (anthropic_validate.py) and answers in the exact wire format:
a `message` JSON object, or SSE (`event: <type>\\ndata: {...}\\n\\n`):
message_start, ping, per block content_block_start / deltas /
content_block_stop, message_delta (cumulative usage), message_stop. Errors
use Anthropic's shape `{"type":"error","error":{"type","message"},"request_id"}`.
Tests script the next replies (text, tool calls, thinking, an HTTP error, an
`error` event after K events, a stall, split or CRLF framing) and read every
request received.

    fake = FakeAnthropic()
    async with LoopbackServer(fake.app) as server: ...
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.anthropic_validate import signature_for, validate, validate_count
from tests.fakes.server import read_request

API_KEY = "test-anthropic-key-SECRET0123456789"
_WORD = re.compile(r"\S+\s*|\s+")
_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                 529: "overloaded_error"}
OVERLOADED = {"type": "overloaded_error", "message": "Overloaded"}


@dataclass
class Reply:
    """What the fake answers to one request."""

    text: str = "Hello! How can I help you today?"
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "input", "id"?}]
    thinking: str | None = None  # a thinking block before the text
    redacted: str | None = None  # a redacted_thinking block (its opaque data) after it
    stop_reason: str | None = None  # default: tool_use / stop_sequence / max_tokens / end_turn
    status: int = 200  # >= 400: an error answer (`error_type`, `message`, or a raw `body`)
    error_type: str | None = None
    message: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0  # seconds before the answer
    error_after: int | None = None  # stream: an `error` event after this many events
    error: dict[str, str] = field(default_factory=lambda: dict(OVERLOADED))
    error_delay: float = 0.0  # seconds before the error event (so it arrives in its own read)
    usage: dict[str, int] = field(default_factory=dict)  # overrides (e.g. cache tokens)
    split: int = 0  # stream: write in pieces of this many bytes (events split across reads)
    crlf: bool = False  # stream: CRLF line ends


@dataclass
class Received:
    headers: dict[str, str]
    body: Any


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": request_id()}


def _error(status: int, error_type: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(error_body(error_type, message)),
                        content_type="application/json", headers=headers or {})


class FakeAnthropic:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Received] = []
        self.streams: list[bytes] = []  # every stream's bytes as sent
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.app = web.Application()
        self.app.router.add_route("*", "/v1/messages", self._handle)
        self.app.router.add_post("/v1/messages/count_tokens", self._count)
        self.app.router.add_get("/v1/models", self._models)
        self.models = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then with `default`."""
        self.replies.extend(replies)

    @property
    def last(self) -> Any:
        return self.requests[-1].body

    async def _models(self, request: web.Request) -> web.Response:
        """`GET /v1/models` (the health probe): a page of model objects, newest first."""
        headers, body = await read_request(request)
        self.requests.append(Received(headers, body))
        if headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
                for m in self.models]
        return web.json_response({"data": data, "has_more": False,
                                  "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, "invalid_request_error", "Method not allowed")
        headers, body = await read_request(request)
        self.requests.append(Received(headers, body))
        bearer = headers.get("authorization", "")
        key = headers.get("x-api-key") or (bearer[7:] if bearer.startswith("Bearer ") else None)
        if key != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if isinstance(body, bytes):
            return _error(400, "invalid_request_error", "There was an error parsing the body.")
        problem = validate(body)
        if problem:
            return _error(*problem)
        reply = self.replies.popleft() if self.replies else self.default
        if reply.stall:
            await asyncio.sleep(reply.stall)
        if reply.status >= 400:
            payload = reply.body if reply.body is not None else error_body(
                reply.error_type or _STATUS_TYPES.get(reply.status, "api_error"),
                reply.message or ("Overloaded" if reply.status == 529 else "Internal error"))
            return web.Response(status=reply.status, body=orjson.dumps(payload),
                                content_type="application/json",
                                headers={"request-id": request_id(), **reply.headers})
        message = _Answer(body, reply).message()
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(message), content_type="application/json",
                                headers={"request-id": request_id(), **reply.headers})
        return await self._stream(request, message, reply)

    async def _count(self, request: web.Request) -> web.Response:
        """count_tokens: the same key and version checks, the prompt's exact count."""
        headers, body = await read_request(request)
        self.requests.append(Received(headers, body))
        if headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        problem = validate_count(body)
        if problem:
            return _error(*problem)
        reply = self.replies.popleft() if self.replies else None
        if reply is not None and reply.status >= 400:
            return _error(reply.status, reply.error_type or _STATUS_TYPES.get(reply.status,
                                                                               "api_error"),
                          reply.message or "Internal error")
        return web.json_response({"input_tokens": prompt_tokens(body)},
                                 headers={"request-id": request_id()})

    async def _stream(self, request: web.Request, message: dict[str, Any],
                      reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            "request-id": request_id(), **reply.headers})
        await response.prepare(request)
        newline = b"\r\n" if reply.crlf else b"\n"
        self.streams.append(b"")
        for k, (name, data) in enumerate(stream_events(message)):
            if reply.error_after is not None and k == reply.error_after:
                name, data = "error", {"type": "error", "error": reply.error,
                                       "request_id": request_id()}
                if reply.error_delay:
                    await asyncio.sleep(reply.error_delay)
            frame = b"event: " + name.encode() + newline + b"data: " + orjson.dumps(data) + \
                newline + newline
            self.streams[-1] += frame
            if reply.split:
                for start in range(0, len(frame), reply.split):
                    await response.write(frame[start:start + reply.split])
                    await asyncio.sleep(0)
            else:
                await response.write(frame)
            if name == "error":
                break
        await response.write_eof()
        return response


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE event sequence the API sends for `message`."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(_block_start(index, {"type": "text", "text": ""}))
            for piece in _WORD.findall(block["text"]):
                events.append(_delta(index, {"type": "text_delta", "text": piece}))
        elif kind == "thinking":
            events.append(_block_start(index, {"type": "thinking", "thinking": "",
                                               "signature": ""}))
            for piece in _WORD.findall(block["thinking"]):
                events.append(_delta(index, {"type": "thinking_delta", "thinking": piece}))
            events.append(_delta(index, {"type": "signature_delta",
                                         "signature": block["signature"]}))
        elif kind == "tool_use":
            events.append(_block_start(index, {**block, "input": {}}))
            arguments = orjson.dumps(block["input"]).decode()
            events.append(_delta(index, {"type": "input_json_delta", "partial_json": ""}))
            for cut in range(0, len(arguments), 7):
                events.append(_delta(index, {"type": "input_json_delta",
                                             "partial_json": arguments[cut:cut + 7]}))
        else:  # redacted_thinking and server-tool blocks arrive whole in their start
            events.append(_block_start(index, block))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"],
                  "stop_sequence": message["stop_sequence"]},
        "usage": {k: usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens",
                                            "cache_read_input_tokens", "output_tokens")}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index,
                                   "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index,
                                   "delta": delta}


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def prompt_tokens(body: dict[str, Any]) -> int:
    return count_tokens(orjson.dumps([body.get("system"), body["messages"],
                                      body.get("tools")]).decode())


class _Answer:
    """The `message` object for one request and reply."""

    def __init__(self, body: dict[str, Any], reply: Reply) -> None:
        self.body = body
        self.reply = reply

    def message(self) -> dict[str, Any]:
        body, reply = self.body, self.reply
        content: list[dict[str, Any]] = []
        if reply.thinking and body.get("thinking", {}).get("type") in ("enabled", "adaptive"):
            content.append({"type": "thinking", "thinking": reply.thinking,
                            "signature": signature_for(reply.thinking)})
            if reply.redacted:
                content.append({"type": "redacted_thinking", "data": reply.redacted})
        text, stop_reason, stop_sequence = reply.text, "end_turn", None
        for sequence in body.get("stop_sequences") or []:
            at = text.find(sequence)
            if at >= 0:
                text, stop_reason, stop_sequence = text[:at], "stop_sequence", sequence
        words = _WORD.findall(text)
        if len(words) > body["max_tokens"]:
            text, stop_reason = "".join(words[:body["max_tokens"]]), "max_tokens"
        if text:
            content.append({"type": "text", "text": text})
        for call in reply.tool_calls or []:
            content.append({"type": "tool_use", "id": call.get("id") or
                            "toolu_" + secrets.token_hex(12), "name": call["name"],
                            "input": call.get("input", {})})
            stop_reason = "tool_use"
        output = sum(count_tokens(b.get("text") or b.get("thinking") or
                                  orjson.dumps(b.get("input") or {}).decode()) for b in content)
        prompt = prompt_tokens(body)
        usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                    "ephemeral_1h_input_tokens": 0},
                 "output_tokens": max(1, output), "service_tier": "standard"}
        usage.update(reply.usage)
        return {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                "model": body["model"], "content": content,
                "stop_reason": reply.stop_reason or stop_reason, "stop_sequence": stop_sequence,
                "usage": usage}
