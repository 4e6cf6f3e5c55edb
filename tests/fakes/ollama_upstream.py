"""A faithful fake of Ollama's native `POST /api/chat`, scriptable per request.

It decodes the body the way Ollama's Go server does (unknown fields ignored,
but wrong types refused with Go's own `json: cannot unmarshal …` wording:
content must be a string, images bare base64, tool arguments an object),
refuses unknown models (404), tools on models without tool support and
`think` on models without thinking, and answers in the exact wire format:
one JSON object, or NDJSON lines (`application/x-ndjson`) when `stream` is
true — which it is unless the body says `"stream": false`. Counts of zero
are omitted, as Go's `omitempty` does. Errors are `{"error": "<message>"}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import read_request

MODELS = ("llama3.2", "qwen3", "gpt-oss", "gemma3")
THINKING = ("qwen3", "gpt-oss")
NO_TOOLS = ("gemma3",)
_WORD = re.compile(r"\S+\s*|\s+")
CREATED_AT = "2025-06-01T12:00:00.000000Z"


@dataclass
class Reply:
    text: str = "Hello! How can I help you today?"
    thinking: str | None = None  # sent when the request asks to think
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments"}]
    with_ids: bool = False  # newer servers: `id` and `function.index` on tool calls
    done_reason: str | None = None
    status: int = 200  # >= 400: `{"error": message}` or a raw `body`
    message: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    error_after: int | None = None  # stream: an `{"error": …}` line after this many lines
    error: str = "an error was encountered while running the model: unexpected EOF"
    prompt_cached: bool = False  # the whole prompt was cached: prompt_eval_count omitted


@dataclass
class Received:
    headers: dict[str, str]
    body: Any


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}),
                        content_type="application/json")


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


class FakeOllama:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key  # Ollama Cloud wants a bearer key; a local server none
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.app = web.Application()
        self.app.router.add_route("*", "/api/chat", self._handle)
        self.app.router.add_get("/api/tags", self._tags)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Any:
        return self.requests[-1].body

    async def _tags(self, request: web.Request) -> web.Response:
        """`GET /api/tags` (list local models, the health probe)."""
        headers, body = await read_request(request)
        self.requests.append(Received(headers, body))
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "unauthorized")
        return web.json_response({"models": [
            {"name": f"{m}:latest", "model": f"{m}:latest", "modified_at": CREATED_AT,
             "size": 2019393189, "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab2793"
             "79d2b4e5a1c2f2d4f8a", "details": {"parent_model": "", "format": "gguf",
                                                "family": "llama", "families": ["llama"],
                                                "parameter_size": "3.2B",
                                                "quantization_level": "Q4_K_M"}}
            for m in MODELS]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers, body = await read_request(request)
        self.requests.append(Received(headers, body))
        if request.method != "POST":
            return web.Response(status=405, text="405 method not allowed")
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "unauthorized")
        if not isinstance(body, dict):
            return _error(400, "invalid character 'x' looking for beginning of value")
        problem = validate(body)
        if problem:
            return _error(*problem)
        reply = self.replies.popleft() if self.replies else self.default
        if reply.stall:
            await asyncio.sleep(reply.stall)
        if reply.status >= 400:
            payload = reply.body if reply.body is not None else {
                "error": reply.message or "fake upstream error"}
            return web.Response(status=reply.status, body=orjson.dumps(payload),
                                content_type="application/json", headers=reply.headers)
        lines = _answer(body, reply)
        if body.get("stream") is False:
            final = dict(lines[-1])
            final["message"] = _merge([line["message"] for line in lines])
            return web.Response(body=orjson.dumps(final), content_type="application/json",
                                headers=reply.headers)
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson",
                                               **reply.headers})
        await response.prepare(request)
        for k, line in enumerate(lines):
            if reply.error_after is not None and k == reply.error_after:
                await response.write(orjson.dumps({"error": reply.error}) + b"\n")
                break
            await response.write(orjson.dumps(line) + b"\n")
        await response.write_eof()
        return response


def _merge(messages: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": ""}
    for message in messages:
        out["content"] += message.get("content", "")
        if message.get("thinking"):
            out["thinking"] = out.get("thinking", "") + message["thinking"]
        if message.get("tool_calls"):
            out.setdefault("tool_calls", []).extend(message["tool_calls"])
    return out


def _answer(body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
    options = body.get("options") or {}
    text, reason = reply.text, "stop"
    for stop in options.get("stop") or []:
        at = text.find(stop)
        if at >= 0:
            text = text[:at]
    words = _WORD.findall(text)
    limit = options.get("num_predict")
    if isinstance(limit, int) and 0 <= limit < len(words):
        words, reason = words[:limit], "length"
    base = {"model": body["model"], "created_at": CREATED_AT}
    lines = []
    if reply.thinking and body.get("think") not in (None, False):
        for piece in _WORD.findall(reply.thinking):
            lines.append({**base, "message": {"role": "assistant", "content": "",
                                              "thinking": piece}, "done": False})
    for word in words:
        lines.append({**base, "message": {"role": "assistant", "content": word}, "done": False})
    if reply.tool_calls:
        calls = []
        for k, call in enumerate(reply.tool_calls):
            fn: dict[str, Any] = {"name": call["name"], "arguments": call.get("arguments", {})}
            mapped: dict[str, Any] = {"function": fn}
            if reply.with_ids:
                mapped["id"] = f"call_{k:x}ollama{len(lines)}"
                fn["index"] = k
            calls.append(mapped)
        lines.append({**base, "message": {"role": "assistant", "content": "",
                                          "tool_calls": calls}, "done": False})
    prompt = count_tokens(orjson.dumps(body["messages"]).decode())
    output = count_tokens("".join(words)) + (
        count_tokens(orjson.dumps(reply.tool_calls).decode()) if reply.tool_calls else 0)
    final: dict[str, Any] = {**base, "message": {"role": "assistant", "content": ""},
                             "done": True, "done_reason": reply.done_reason or reason,
                             "total_duration": 123456789, "load_duration": 1234567}
    if prompt and not reply.prompt_cached:  # omitempty
        final["prompt_eval_count"] = prompt
    final["prompt_eval_duration"] = 2345678
    if output:
        final["eval_count"] = output
    final["eval_duration"] = 3456789
    lines.append(final)
    return lines


def _go_type(value: Any) -> str:
    return {str: "string", list: "array", dict: "object", bool: "bool", type(None): "null"}.get(
        type(value), "number")


def validate(body: dict[str, Any]) -> tuple[int, str] | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "model is required"
    name = model.split(":")[0]
    if name not in MODELS:
        return 404, f'model "{model}" not found, try pulling it first'
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        return 400, (f"json: cannot unmarshal {_go_type(messages)} into Go struct field "
                     "ChatRequest.messages of type []api.Message")
    for message in messages:
        if not isinstance(message, dict):
            return 400, "json: cannot unmarshal into Go value of type api.Message"
        for key, want in (("role", str), ("content", str), ("tool_name", str),
                          ("thinking", str)):
            if key in message and not isinstance(message[key], want):
                return 400, (f"json: cannot unmarshal {_go_type(message[key])} into Go struct "
                             f"field Message.messages.{key} of type string")
        if message.get("role") not in ("system", "user", "assistant", "tool"):
            return 400, f"invalid role: {message.get('role')!r}"
        for image in message.get("images") or []:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return 400, "illegal base64 data at input byte 4"
        for call in message.get("tool_calls") or []:
            arguments = (call.get("function") or {}).get("arguments")
            if not isinstance(arguments, dict):
                return 400, (f"json: cannot unmarshal {_go_type(arguments)} into Go struct "
                             "field ToolCallFunction.messages.tool_calls.function.arguments of "
                             "type api.ToolCallFunctionArguments")
    if body.get("tools") and name in NO_TOOLS:
        return 400, f"registry.ollama.ai/library/{model} does not support tools"
    think = body.get("think")
    if think not in (None, False) and name not in THINKING:
        return 400, f'"{model}" does not support thinking'
    if think not in (None, True, False, "high", "medium", "low"):
        return 400, f"invalid think value: {think!r}"
    fmt = body.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        return 400, f"invalid format: {fmt!r}"
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        return 400, "json: cannot unmarshal into Go struct field ChatRequest.options"
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return 400, (f"json: cannot unmarshal {_go_type(stream)} into Go struct field "
                     "ChatRequest.stream of type bool")
    return None
