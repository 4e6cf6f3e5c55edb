"""A faithful fake of Azure OpenAI chat completions, scriptable per request.

Both URL styles: `/openai/deployments/{deployment}/chat/completions?api-version=…`
(the api-version is required; the deployment in the path selects the model)
and `/openai/v1/chat/completions` (the body's `model` names the deployment).
It wants the key in `api-key`, validates the body like OpenAI
(openai_validate.py), and answers as Azure does: OpenAI's JSON plus
`prompt_filter_results` and per-choice `content_filter_results`; streams open
with the empty preamble chunk (`"id": ""`, `"choices": []`,
`prompt_filter_results`), and errors use Azure's shapes (string `code`,
`innererror` on content-filter refusals).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_validate import validate
from tests.fakes.server import read_request

API_KEY = "azure-test-SECRET0123456789abcdef"
VERSIONS = frozenset({"2024-10-21", "2024-12-01-preview", "2025-04-01-preview", "preview",
                      "latest"})
_WORD = re.compile(r"\S+\s*|\s+")
SAFE = {"hate": {"filtered": False, "severity": "safe"},
        "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"},
        "violence": {"filtered": False, "severity": "safe"}}
FILTERED_PROMPT = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766")


@dataclass
class Reply:
    text: str = "Hello! How can I help you today?"
    tool_calls: list[dict[str, str]] | None = None  # [{"id", "name", "arguments"}]
    finish_reason: str | None = None
    filtered_prompt: bool = False  # answer Azure's 400 content_filter refusal
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    error_after: int | None = None  # stream: a `data: {"error": …}` event after this many


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def azure_error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _error(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload),
                        content_type="application/json")


class FakeAzure:
    def __init__(self, deployments: tuple[str, ...] = ("gpt4o-prod",),
                 api_key: str = API_KEY) -> None:
        self.deployments = deployments
        self.api_key = api_key
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.app = web.Application()
        self.app.router.add_route("*", "/openai/deployments/{deployment}/chat/completions",
                                  self._handle)
        self.app.router.add_route("*", "/openai/v1/chat/completions", self._handle)
        self.app.router.add_get("/openai/models", self._models)
        self.app.router.add_get("/openai/v1/models", self._models)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Any:
        return self.requests[-1].body

    async def _models(self, request: web.Request) -> web.Response:
        """Models - List: `GET /openai/models?api-version=…` (api-version required) or
        `GET /openai/v1/models` (the health probe)."""
        headers, body = await read_request(request)
        self.requests.append(Received(request.path, dict(request.query), headers, body))
        version = request.query.get("api-version")
        if request.path == "/openai/models" and version is None:
            return _error(404, azure_error("404", "Resource not found"))
        if version is not None and version not in VERSIONS:
            return _error(400, azure_error("BadRequest", "API version not supported"))
        if headers.get("api-key") != self.api_key:
            return _error(401, azure_error(
                "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."))
        return web.json_response({"object": "list", "data": [
            {"id": "gpt-4o-2024-08-06", "object": "model", "created_at": 1722902400,
             "status": "succeeded", "lifecycle_status": "generally-available",
             "capabilities": {"fine_tune": False, "inference": True, "completion": False,
                              "chat_completion": True, "embeddings": False}}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers, body = await read_request(request)
        self.requests.append(Received(request.path, dict(request.query), headers, body))
        version = request.query.get("api-version")
        deployment = request.match_info.get("deployment")
        if deployment is not None and version is None:
            return _error(404, azure_error("404", "Resource not found"))
        if version is not None and version not in VERSIONS:
            return _error(400, azure_error("BadRequest", "API version not supported"))
        if "api-key" not in headers:
            return _error(401, azure_error(
                "401", "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API."))
        if headers["api-key"] != self.api_key:
            return _error(401, azure_error(
                "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."))
        if request.method != "POST":
            return _error(405, azure_error("405", "Method not allowed"))
        if deployment is None and isinstance(body, dict):
            deployment = body.get("model")
        if deployment not in self.deployments:
            return _error(404, azure_error(
                "DeploymentNotFound", "The API deployment for this resource does not exist. If "
                "you created the deployment within the last 5 minutes, please wait a moment and "
                "try again."))
        problem = validate(body if not isinstance(body, bytes) else None)
        if problem:
            return _error(400, {"error": problem})
        reply = self.replies.popleft() if self.replies else self.default
        if reply.stall:
            await asyncio.sleep(reply.stall)
        if reply.filtered_prompt:
            return _error(400, azure_error(
                "content_filter", FILTERED_PROMPT, param="prompt", type=None, status=400,
                innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    **SAFE, "violence": {"filtered": True, "severity": "high"}}}))
        if reply.status >= 400:
            payload = reply.body if reply.body is not None else azure_error(
                str(reply.status), "fake upstream error")
            return web.Response(status=reply.status, body=orjson.dumps(payload),
                                content_type="application/json", headers=reply.headers)
        answer = _Answer(body, deployment, reply)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(answer.completion()),
                                content_type="application/json",
                                headers={"apim-request-id": "fake", **reply.headers})
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                               **reply.headers})
        await response.prepare(request)
        for k, event in enumerate(answer.events()):
            if reply.error_after is not None and k == reply.error_after:
                await response.write(b"data: " + orjson.dumps(azure_error(
                    "server_error", "The server had an error while processing your request.")) +
                    b"\n\n")
                break
            await response.write(event)
        await response.write_eof()
        return response


class _Answer:
    def __init__(self, body: dict[str, Any], deployment: str, reply: Reply) -> None:
        self.model = "gpt-4o-2024-11-20"  # Azure names the underlying model, not the deployment
        self.id = "chatcmpl-azure" + format(abs(hash(orjson.dumps(body))) % 10**12, "012d")
        self.created = 1_700_000_000
        self.reply = reply
        self.calls = reply.tool_calls or []
        self.finish = reply.finish_reason or ("tool_calls" if self.calls else "stop")
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        prompt = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 7
        completion = (len(reply.text) + sum(len(c["arguments"]) for c in self.calls)) // 4 + 1
        self.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {
                          "reasoning_tokens": 0, "audio_tokens": 0,
                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def _message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "refusal": None, "annotations": [],
                                   "content": None if self.calls else self.reply.text}
        if self.calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                "name": c["name"], "arguments": c["arguments"]}} for c in self.calls]
        return message

    def completion(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_azure01",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
                "choices": [{"index": 0, "message": self._message(), "logprobs": None,
                             "finish_reason": self.finish, "content_filter_results": SAFE}],
                "usage": self.usage}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None,
               filtered: bool = True) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish}
        if filtered:
            choice["content_filter_results"] = SAFE if delta.get("content") else {}
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "system_fingerprint": "fp_azure01", "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def events(self) -> list[bytes]:
        out = [b"data: " + orjson.dumps({
            "choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}]})
            + b"\n\n"]
        out.append(self._chunk({"role": "assistant", "content": "" if not self.calls else None,
                                "refusal": None}))
        if not self.calls:
            for word in _WORD.findall(self.reply.text):
                out.append(self._chunk({"content": word}))
        for k, call in enumerate(self.calls):
            out.append(self._chunk({"tool_calls": [{"index": k, "id": call["id"],
                                                    "type": "function", "function": {
                                                        "name": call["name"],
                                                        "arguments": ""}}]}))
            out.append(self._chunk({"tool_calls": [{"index": k, "function": {
                "arguments": call["arguments"]}}]}))
        out.append(self._chunk({}, self.finish))
        if self.include_usage:
            out.append(b"data: " + orjson.dumps({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_azure01", "choices": [],
                "usage": self.usage}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out
