"""A faithful fake of OpenAI's `POST /v1/responses`, scriptable per request.

It checks the bearer key, validates the body as strictly as the real API
(responses_validate.py) and answers in the exact wire format: a Response JSON
object, or SSE events (`event: <type>\\ndata: {...}\\n\\n`, no `[DONE]`):
response.created, response.in_progress, then per output item
output_item.added, its parts and deltas, their .done events and
output_item.done, and response.completed (or .incomplete), every event with
its sequence_number. Errors use OpenAI's envelope. Tests script the next
replies (text, reasoning summary, function calls, an HTTP error, a cut
connection, a `response.failed` or `error` event after K events, a stall) and
read every request received.

    fake = FakeResponses()
    async with LoopbackServer(fake.app) as server: ...
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_validate import error
from tests.fakes.responses_validate import validate
from tests.fakes.server import read_request

API_KEY = "sk-test-RESPONSES-0123456789"
_WORD = re.compile(r"\S+\s*|\s+")


@dataclass
class Reply:
    text: str = "Hello from the Responses API."
    reasoning: str | None = None  # a reasoning item with this summary, first
    calls: list[dict[str, str]] | None = None  # [{"name", "arguments", "call_id"?}]
    incomplete: bool = False  # stop at max_output_tokens
    status: int = 200  # >= 400: answer `body` (default: an OpenAI error) with `headers`
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    drop_after: int | None = None  # stream: cut the connection after this many events
    fail_after: int | None = None  # stream: response.failed after this many events
    error_after: int | None = None  # stream: an `error` event after this many events
    failure_code: str = "server_error"
    usage: dict[str, int] | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(25)}"


class FakeResponses:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.stored: set[str] = set()
        self.app = web.Application()
        self.app.router.add_route("*", "/v1/responses", self._handle)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Any:
        return self.requests[-1].body

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers, body = await read_request(request)
        self.requests.append(Received(request.method, request.path, headers, body))
        if request.method != "POST":
            return _error(405, error(f"Invalid method for URL ({request.method} "
                                     "/v1/responses)"))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, error("Incorrect API key provided.", code="invalid_api_key"))
        problem = validate(body if not isinstance(body, bytes) else None, self.stored)
        if problem:
            return _error(400, problem)
        reply = self.replies.popleft() if self.replies else self.default
        if reply.stall:
            await asyncio.sleep(reply.stall)
        if reply.status >= 400:
            payload = reply.body if reply.body is not None else {"error": error(
                f"fake upstream error {reply.status}", type_="server_error")}
            return web.Response(status=reply.status, body=orjson.dumps(payload), headers={
                "content-type": "application/json", **reply.headers})
        answer = _Answer(body, reply)
        if body.get("store", True):
            self.stored.add(answer.response["id"])
            self.stored.update(i["id"] for i in answer.output if i["type"] == "reasoning")
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(answer.final()), headers={
                "content-type": "application/json", "x-request-id": "req_fakeresponses",
                **reply.headers})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "x-request-id": "req_fakeresponses",
                                           **reply.headers})
        await resp.prepare(request)
        for k, event in enumerate(answer.events()):
            if reply.drop_after is not None and k >= reply.drop_after:
                request.transport.close()
                return resp
            if reply.fail_after is not None and k >= reply.fail_after:
                await resp.write(answer.failed(k))
                break
            if reply.error_after is not None and k >= reply.error_after:
                await resp.write(answer.error_event(k))
                break
            await resp.write(event)
        await resp.write_eof()
        return resp


def _error(status: int, err: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": err}),
                        content_type="application/json")


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v.get("content") or v.get("text") or v.get("output")
                                 or v.get("arguments")) for v in value if isinstance(v, dict))
    return ""


class _Answer:
    """One response (JSON, or its events) for a validated request and a reply."""

    def __init__(self, body: dict[str, Any], reply: Reply) -> None:
        self.body = body
        self.reply = reply
        self.seq = 0
        self.response = self._skeleton()
        self.output: list[dict[str, Any]] = []
        if reply.reasoning:
            self.output.append({"id": _id("rs"), "type": "reasoning", "summary": [
                {"type": "summary_text", "text": reply.reasoning}]})
        if reply.text and not reply.calls:
            status = "incomplete" if reply.incomplete else "completed"
            self.output.append({"id": _id("msg"), "type": "message", "status": status,
                                "content": [_text(reply.text)], "role": "assistant"})
        for call in reply.calls or ():
            self.output.append({"id": _id("fc"), "type": "function_call",
                                "status": "completed", "arguments": call["arguments"],
                                "call_id": call.get("call_id") or _id("call"),
                                "name": call["name"]})
        prompt = (len(_text_of(body.get("input"))) + len(body.get("instructions") or "")) // 4
        words = len(_WORD.findall(reply.text)) if not reply.calls else 5
        reasoning = len(_WORD.findall(reply.reasoning or ""))
        self.usage = {"input_tokens": prompt + 8,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": words + reasoning,
                      "output_tokens_details": {"reasoning_tokens": reasoning},
                      "total_tokens": prompt + 8 + words + reasoning}
        if reply.usage:
            self.usage.update(reply.usage)

    def _skeleton(self) -> dict[str, Any]:
        body = self.body
        text = body.get("text") or {}
        return {
            "id": _id("resp"), "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "background": False, "error": None,
            "incomplete_details": None, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
            "model": body["model"] + "-2025-04-14", "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"),
                          "summary": None},
            "safety_identifier": None, "service_tier": "default",
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_logprobs": 0, "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": None, "user": None, "metadata": body.get("metadata") or {}}

    def final(self) -> dict[str, Any]:
        out = dict(self.response)
        out["status"] = "incomplete" if self.reply.incomplete else "completed"
        if self.reply.incomplete:
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            out["completed_at"] = int(time.time())
        out["output"] = self.output
        out["usage"] = self.usage
        return out

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def events(self) -> list[bytes]:
        ev = self._event
        out = [ev("response.created", response=self.response),
               ev("response.in_progress", response=self.response)]
        for n, item in enumerate(self.output):
            kind, iid = item["type"], item["id"]
            if kind == "reasoning":
                out.append(ev("response.output_item.added", output_index=n,
                              item={"id": iid, "type": "reasoning", "summary": []}))
                text = item["summary"][0]["text"]
                part = {"type": "summary_text", "text": ""}
                out.append(ev("response.reasoning_summary_part.added", item_id=iid,
                              output_index=n, summary_index=0, part=part))
                for word in _WORD.findall(text):
                    out.append(ev("response.reasoning_summary_text.delta", item_id=iid,
                                  output_index=n, summary_index=0, delta=word))
                out.append(ev("response.reasoning_summary_text.done", item_id=iid,
                              output_index=n, summary_index=0, text=text))
                out.append(ev("response.reasoning_summary_part.done", item_id=iid,
                              output_index=n, summary_index=0,
                              part={"type": "summary_text", "text": text}))
            elif kind == "message":
                out.append(ev("response.output_item.added", output_index=n, item={
                    "id": iid, "type": "message", "status": "in_progress", "content": [],
                    "role": "assistant"}))
                out.append(ev("response.content_part.added", item_id=iid, output_index=n,
                              content_index=0, part=_text("")))
                text = item["content"][0]["text"]
                for word in _WORD.findall(text):
                    out.append(ev("response.output_text.delta", item_id=iid, output_index=n,
                                  content_index=0, delta=word, logprobs=[]))
                out.append(ev("response.output_text.done", item_id=iid, output_index=n,
                              content_index=0, text=text, logprobs=[]))
                out.append(ev("response.content_part.done", item_id=iid, output_index=n,
                              content_index=0, part=_text(text)))
            else:
                out.append(ev("response.output_item.added", output_index=n, item={
                    **item, "status": "in_progress", "arguments": ""}))
                args = item["arguments"]
                for at in range(0, len(args), 6):
                    out.append(ev("response.function_call_arguments.delta", item_id=iid,
                                  output_index=n, delta=args[at:at + 6]))
                out.append(ev("response.function_call_arguments.done", item_id=iid,
                              output_index=n, arguments=args))
            out.append(ev("response.output_item.done", output_index=n, item=item))
        final = self.final()
        kind = "response.incomplete" if self.reply.incomplete else "response.completed"
        out.append(ev(kind, response=final))
        return out

    def failed(self, k: int) -> bytes:
        self.seq = k
        failed = {**self.response, "status": "failed", "usage": self.usage,
                  "error": {"code": self.reply.failure_code, "message": "The model failed."}}
        return self._event("response.failed", response=failed)

    def error_event(self, k: int) -> bytes:
        self.seq = k
        return self._event("error", code=self.reply.failure_code,
                           message="An error occurred while processing your request.",
                           param=None)


def _text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
