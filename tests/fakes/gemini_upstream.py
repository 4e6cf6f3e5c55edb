"""A faithful fake of the Gemini API's `models/{model}:generateContent` and
`:streamGenerateContent`, scriptable per request.

It takes the key from `x-goog-api-key` (or `?key=`, which it records so tests
can prove the gateway never uses it), validates the body as strictly as the
real API (gemini_validate.py: unknown fields, roles, one data field per part, base64, function
call / response pairing, stop sequences ≤ 5, and, for `gemini-3*` models, the
thought signature on the first function call of each model turn in the
current turn) and answers in the exact wire format: a
`GenerateContentResponse` JSON, SSE with CRLF framing and no `[DONE]` when
`alt=sse`, or one JSON array without it. Errors use Google's shape
`{"error": {"code", "message", "status", "details"?}}`.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from aiohttp import web

from tests.fakes.gemini_validate import validate
from tests.fakes.server import read_request

API_KEY = "test-gemini-key-SECRET0123456789abcdef"
_WORD = re.compile(r"\S+\s*|\s+")
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}
KNOWN_MODEL = re.compile(r"^gemini-(2\.0|2\.5|3)(-[a-z0-9.-]+)?$")
@dataclass
class Reply:
    text: str = "Hello! How can I help you today?"
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "args", "id"?}]
    thought: str | None = None  # a thought summary (sent when includeThoughts is set)
    finish_reason: str | None = None  # default STOP / MAX_TOKENS
    block_reason: str | None = None  # the prompt is blocked: no candidates
    status: int = 200  # >= 400: a Google error (`message`, `details`) or a raw `body`
    message: str | None = None
    details: list[dict[str, Any]] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    error_after: int | None = None  # stream: an error data event after this many chunks
    error: dict[str, Any] = field(default_factory=lambda: {
        "code": 500, "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"})
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def google_error(status: int, message: str, details: list | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": _STATUS.get(status, "INTERNAL")}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _error(status: int, message: str, details: list | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(google_error(status, message, details)),
                        content_type="application/json")


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


class FakeGemini:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.signatures: set[str] = set()  # every thoughtSignature handed out
        # Signatures are opaque strings: tests may hand out any shape (base64url, text).
        self.new_signature: Callable[[], str] = \
            lambda: base64.b64encode(secrets.token_bytes(48)).decode()
        self.app = web.Application()
        self.app.router.add_route("*", "/v1beta/models/{tail}", self._handle)
        self.app.router.add_get("/v1beta/models", self._models)
        self.models = ("gemini-2.5-flash", "gemini-2.5-pro")

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Any:
        return self.requests[-1].body

    async def _models(self, request: web.Request) -> web.Response:
        """`GET /v1beta/models` (models.list, the health probe)."""
        headers, body = await read_request(request)
        self.requests.append(Received(request.path, dict(request.query), headers, body))
        problem = self._key_problem(headers.get("x-goog-api-key") or request.query.get("key"))
        if problem is not None:
            return problem
        return web.json_response({"models": [
            {"name": f"models/{m}", "version": "001", "displayName": m,
             "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
             "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for m in self.models]})

    def _key_problem(self, key: str | None) -> web.Response | None:
        if not key:
            return _error(403, "Method doesn't allow unregistered callers (callers without "
                          "established identity). Please use API Key or other form of API "
                          "consumer identity to call this API.")
        if key != self.api_key:
            return _error(400, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers, body = await read_request(request)
        self.requests.append(Received(request.path, dict(request.query), headers, body))
        model, _, method = request.match_info["tail"].partition(":")
        if request.method != "POST" or method not in ("generateContent",
                                                      "streamGenerateContent"):
            return _error(404, f"Method not found: {method or '(none)'}")
        problem = self._key_problem(headers.get("x-goog-api-key") or request.query.get("key"))
        if problem is not None:
            return problem
        if not KNOWN_MODEL.match(model):
            return _error(404, f"models/{model} is not found for API version v1beta, or is not "
                          "supported for generateContent. Call ListModels to see the list of "
                          "available models and their supported methods.")
        if not isinstance(body, dict):
            return _error(400, "Invalid JSON payload received. Expected an object.")
        problem = validate(body, model, self.signatures)
        if problem:
            return _error(400, problem)
        reply = self.replies.popleft() if self.replies else self.default
        if reply.stall:
            await asyncio.sleep(reply.stall)
        if reply.status >= 400:
            payload = reply.body if reply.body is not None else google_error(
                reply.status, reply.message or "fake upstream error", reply.details)
            return web.Response(status=reply.status, body=orjson.dumps(payload),
                                content_type="application/json", headers=reply.headers)
        chunks = _Answer(body, model, reply, self.signatures, self.new_signature).chunks()
        if method == "generateContent":
            return web.Response(body=orjson.dumps(merge(chunks)), content_type="application/json",
                                headers=reply.headers)
        sse = request.query.get("alt") == "sse"
        response = web.StreamResponse(headers={
            "content-type": "text/event-stream" if sse else "application/json; charset=UTF-8",
            **reply.headers})
        await response.prepare(request)
        for k, chunk in enumerate(chunks):
            if reply.error_after is not None and k == reply.error_after:
                chunk = {"error": reply.error}
            data = orjson.dumps(chunk)
            if sse:
                await response.write(b"data: " + data + b"\r\n\r\n")
            else:
                await response.write((b"[" if k == 0 else b",\r\n") + data)
            if "error" in chunk:
                break
        if not sse:
            await response.write(b"]")
        await response.write_eof()
        return response


def merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming answer: the chunks' parts joined per candidate, the last usage."""
    last = dict(chunks[-1])
    candidates: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for candidate in chunk.get("candidates") or []:
            index = candidate.get("index", 0)
            into = candidates.setdefault(index, {"content": {"parts": [], "role": "model"},
                                                 "index": index})
            for part in candidate["content"]["parts"]:
                parts = into["content"]["parts"]
                if "text" in part and parts and "text" in parts[-1] and \
                        parts[-1].get("thought") == part.get("thought"):
                    parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                else:
                    parts.append(part)
            if "finishReason" in candidate:
                into["finishReason"] = candidate["finishReason"]
    if candidates:
        last["candidates"] = [candidates[i] for i in sorted(candidates)]
    return last


class _Answer:
    def __init__(self, body: dict[str, Any], model: str, reply: Reply, signatures: set[str],
                 new_signature: Callable[[], str]):
        self.body, self.model, self.reply, self.signatures = body, model, reply, signatures
        self.new_signature = new_signature
        config = body.get("generationConfig") or {}
        self.config = config
        self.n = config.get("candidateCount", 1)
        thinking = config.get("thinkingConfig") or {}
        self.thoughts = bool(thinking.get("includeThoughts")) and reply.thought
        self.thinking_model = model.startswith(("gemini-3", "gemini-2.5"))

    def chunks(self) -> list[dict[str, Any]]:
        reply, config = self.reply, self.config
        prompt = count_tokens(orjson.dumps([self.body.get("systemInstruction"),
                                            self.body["contents"],
                                            self.body.get("tools")]).decode())
        base = {"modelVersion": self.model, "responseId": secrets.token_urlsafe(16)[:22]}
        if reply.block_reason:
            return [{"promptFeedback": {"blockReason": reply.block_reason},
                     "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                     **base}]
        text, finish = reply.text, "STOP"
        for stop in config.get("stopSequences") or []:
            at = text.find(stop)
            if at >= 0:
                text = text[:at]
        words = _WORD.findall(text)
        limit = config.get("maxOutputTokens")
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        finish = reply.finish_reason or finish
        per_candidate: list[list[dict[str, Any]]] = []
        for _ in range(self.n):
            parts: list[dict[str, Any]] = []
            if self.thoughts:
                parts.append({"text": reply.thought, "thought": True})
            parts += [{"text": w} for w in words]
            for k, call in enumerate(reply.tool_calls or []):
                fc: dict[str, Any] = {"name": call["name"], "args": call.get("args", {})}
                if call.get("id"):
                    fc["id"] = call["id"]
                part: dict[str, Any] = {"functionCall": fc}
                if k == 0 and self.thinking_model:  # only the first parallel call is signed
                    signature = self.new_signature()
                    self.signatures.add(signature)
                    part["thoughtSignature"] = signature
                parts.append(part)
            per_candidate.append(parts or [{"text": ""}])
        out_text = "".join(w for w in words) + orjson.dumps(reply.tool_calls or []).decode()
        candidates = count_tokens(out_text) * self.n
        thoughts = count_tokens(reply.thought or "") if self.thoughts else 0
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                 "totalTokenCount": prompt + candidates + thoughts,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage.update(reply.usage)
        chunks = []
        steps = max(len(p) for p in per_candidate)
        for step in range(steps):
            candidates_out = []
            for index, parts in enumerate(per_candidate):
                if step >= len(parts):
                    continue
                candidate: dict[str, Any] = {"content": {"parts": [parts[step]], "role": "model"},
                                             "index": index}
                if step == len(parts) - 1:
                    candidate["finishReason"] = finish
                candidates_out.append(candidate)
            last = step == steps - 1
            chunks.append({"candidates": candidates_out, "usageMetadata": usage if last else {
                "promptTokenCount": prompt, "totalTokenCount": prompt,
                "promptTokensDetails": usage["promptTokensDetails"]}, **base})
        return chunks
