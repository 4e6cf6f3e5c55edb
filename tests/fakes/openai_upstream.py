"""A faithful fake of OpenAI's `POST /v1/chat/completions`, scriptable per request.

It validates like the real API (bearer key, parameters, message and tool
shapes: see `openai_validate.py`) and answers in the exact wire format:
`chat.completion` JSON, or SSE chunks (role delta first, content or tool-call
deltas, one finish chunk, the usage chunk with `choices: []` when
`stream_options.include_usage` is set, then `data: [DONE]`). Tests script the
next replies (text, tool calls, an error, a stall, a dropped connection), read
every request it received, and observe when a client connection closes.

    fake = FakeOpenAI()
    async with LoopbackServer(fake.app, handler_cancellation=True) as server: ...
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_validate import error, validate
from tests.fakes.server import read_request

API_KEY = "sk-test-SECRET123456789"
_WORD = re.compile(r"\S+\s*|\s+")


@dataclass
class Reply:
    """What the fake answers to one request."""

    text: str = "Hello! How can I help you today?"
    tool_calls: list[dict[str, str]] | None = None  # [{"id", "name", "arguments"}]
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    status: int = 200  # >= 400: answer `body` (default: an OpenAI error) with `headers`
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0  # seconds before the first byte of the answer
    drop_after: int | None = None  # stream: cut the connection after this many chunks
    chunk_delay: float = 0.0  # stream: seconds between chunks
    pauses: dict[int, float] = field(default_factory=dict)  # stream: {k: wait before chunk k}
    inject: dict[int, bytes] = field(default_factory=dict)  # stream: {k: raw bytes before k}
    usage: dict[str, int] | None = None  # default: counted from the request and reply
    usage_chunk: bool = True  # stream: False for a server that ignores include_usage


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw bytes if it was not JSON


class FakeOpenAI:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        #: every key it accepts (a key pool's accounts); add to it for more than one
        self.keys: set[str] = {api_key}
        #: keys whose account is out of credit: 429 insufficient_quota, as OpenAI answers
        self.quota_spent: set[str] = set()
        self.by_key: dict[str, int] = {}  # requests per presented key
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.disconnects: list[float] = []  # loop.time() when a client went away mid-answer
        self.disconnected = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/v1/chat/completions", self._handle)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_post("/v1/completions", self._completions)
        self.app.router.add_get("/v1/models", self._models)
        self.models = ("gpt-4o", "gpt-4o-mini")

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then with `default`."""
        self.replies.extend(replies)

    async def wait_disconnect(self, timeout: float = 1.0) -> float:
        """The loop time at which the next (or a past) client disconnect was seen."""
        await asyncio.wait_for(self.disconnected.wait(), timeout)
        return self.disconnects[-1]

    # --- the endpoint ----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers, body = await read_request(request)
        self.requests.append(Received(request.method, request.path, headers, body))
        if request.method != "POST":
            return _error(405, error(f"Invalid method for URL ({request.method} "
                                     f"/v1/chat/completions)"))
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username. You can obtain an API key "
                "from https://platform.openai.com/account/api-keys."))
        given = auth[len("Bearer "):]
        self.by_key[given] = self.by_key.get(given, 0) + 1
        if given not in self.keys:
            return _error(401, error(
                f"Incorrect API key provided: {_mask(given)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))
        if given in self.quota_spent:
            return _error(429, error(
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type_="insufficient_quota", code="insufficient_quota"))
        problem = validate(body if not isinstance(body, bytes) else None)
        if problem:
            return _error(400, problem)
        reply = self.replies.popleft() if self.replies else self.default
        try:
            if reply.stall:
                await asyncio.sleep(reply.stall)
            if reply.status >= 400:
                payload = reply.body if reply.body is not None else error(
                    f"fake upstream error {reply.status}", type_="server_error")
                if isinstance(payload, dict) and "error" not in payload:
                    payload = {"error": payload}
                data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                return web.Response(status=reply.status, body=data, headers={
                    "content-type": "application/json", **reply.headers})
            answer = _Answer(body, reply)
            if body.get("stream"):
                return await self._stream(request, answer, reply)
            return web.Response(body=orjson.dumps(answer.completion()), headers={
                "content-type": "application/json", "x-request-id": "req_fakeupstream",
                **reply.headers})
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects.append(asyncio.get_running_loop().time())
            self.disconnected.set()
            raise

    async def _stream(self, request: web.Request, answer: "_Answer",
                      reply: Reply) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "x-request-id": "req_fakeupstream", **reply.headers})
        await resp.prepare(request)
        for k, event in enumerate(answer.events()):
            if k in reply.inject:  # e.g. a mid-stream `data: {"error": ...}` event
                await resp.write(reply.inject[k])
            if reply.drop_after is not None and k >= reply.drop_after:
                request.transport.close()  # mid-body, so the chunked stream is incomplete
                return resp
            if reply.chunk_delay and k:
                await asyncio.sleep(reply.chunk_delay)
            if k in reply.pauses:
                await asyncio.sleep(reply.pauses[k])
            await resp.write(event)
        await resp.write_eof()
        return resp


    async def _models(self, request: web.Request) -> web.Response:
        """`GET /v1/models` (the health probe): `{"object": "list", "data": [model...]}`."""
        headers, body = await read_request(request)
        self.requests.append(Received(request.method, request.path, headers, body))
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, error("Incorrect API key provided.", code="invalid_api_key"))
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in self.models]})

    # --- /v1/embeddings and the legacy /v1/completions ------------------------------------

    async def _received(self, request: web.Request) -> tuple[Any, web.Response | None]:
        headers, body = await read_request(request)
        self.requests.append(Received(request.method, request.path, headers, body))
        if request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return body, _error(401, error("Incorrect API key provided.",
                                           code="invalid_api_key"))
        if not isinstance(body, dict):
            return body, _error(400, error("We could not parse the JSON body of your request."))
        return body, None

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        problem = validate_embeddings(body)
        if problem:
            return _error(400, problem)
        reply = self.replies.popleft() if self.replies else None
        if reply is not None and reply.status >= 400:
            return web.Response(status=reply.status, headers={
                "content-type": "application/json", **reply.headers},
                body=orjson.dumps(reply.body or {"error": error(
                    f"fake upstream error {reply.status}", type_="server_error")}))
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = body.get("dimensions") or EMBEDDING_DIMENSIONS.get(body["model"], 1536)
        b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            vector = fake_vector(orjson.dumps(item), dims)
            tokens += len(item) if isinstance(item, list) else len(item) // 4 + 1
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(
                struct.pack(f"<{dims}f", *vector)).decode() if b64 else vector})
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                                 dumps=lambda v: orjson.dumps(v).decode())

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        if not str(body.get("model")).startswith(COMPLETION_MODELS):
            return _error(404, error(
                "This is a chat model and not supported in the v1/completions endpoint. "
                "Did you mean to use v1/chat/completions?", param="model"))
        problem = validate_completions(body)
        if problem:
            return _error(400, problem)
        reply = self.replies.popleft() if self.replies else self.default
        prompts = body["prompt"] if isinstance(body["prompt"], list) and not isinstance(
            body["prompt"][0], int) else [body["prompt"]]
        n = body.get("n") or 1
        words = _WORD.findall(reply.text)
        head = {"id": "cmpl-fake" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:24],
                "object": "text_completion", "created": 1_700_000_000, "model": body["model"]}
        prompt_tokens = sum(len(str(p)) // 4 + 1 for p in prompts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words) * n * len(prompts),
                 "total_tokens": prompt_tokens + len(words) * n * len(prompts)}
        choices = [(i * n + j, (p if body.get("echo") else "")) for i, p in enumerate(prompts)
                   for j in range(n)]
        if not body.get("stream"):
            return web.Response(content_type="application/json", body=orjson.dumps({
                **head, "choices": [{"text": echo + reply.text + (body.get("suffix") or ""),
                                     "index": k, "logprobs": None, "finish_reason": "stop"}
                                    for k, echo in choices], "usage": usage}))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if include_usage else {}
        for k, echo in choices:
            for piece, finish in ([(echo, None)] if echo else []) + [(w, None) for w in words] \
                    + [("", "stop")]:
                await resp.write(b"data: " + orjson.dumps({**head, "choices": [{
                    "text": piece, "index": k, "logprobs": None, "finish_reason": finish}],
                    **extra}) + b"\n\n")
        if include_usage:
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage})
                             + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                        "text-embedding-ada-002": 1536}
COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")


def fake_vector(seed: bytes, dims: int) -> list[float]:
    """A deterministic unit vector, rounded through float32 as the real API's are."""
    raw = hashlib.shake_256(seed).digest(2 * dims)
    values = [x / 32768.0 - 1.0 for x in struct.unpack(f"<{dims}H", raw)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in values))))


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _unrecognized(body: dict[str, Any], known: set[str]) -> dict[str, Any] | None:
    for name in body:
        if name not in known:
            return error(f"Unrecognized request argument supplied: {name}")
    return None


def validate_embeddings(body: dict[str, Any]) -> dict[str, Any] | None:
    problem = _unrecognized(body, {"input", "model", "encoding_format", "dimensions", "user"})
    if problem:
        return problem
    if not isinstance(body.get("model"), str):
        return error("you must provide a model parameter")
    value = body.get("input")
    if value is None:
        return error("'input' is a required property", param="input")
    if not (isinstance(value, str) and value or _is_tokens(value) or isinstance(value, list)
            and value and (all(isinstance(v, str) and v for v in value)
                           or all(_is_tokens(v) for v in value))):
        return error("'$.input' is invalid. Please check the API reference: "
                     "https://platform.openai.com/docs/api-reference.", param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        return error(f"Invalid value for 'encoding_format' = {body['encoding_format']}. "
                     "Supported values are: 'float' and 'base64'.", param="encoding_format",
                     code="invalid_value")
    dims = body.get("dimensions")
    if dims is not None:
        if body["model"] == "text-embedding-ada-002":
            return error("This model does not support specifying dimensions.",
                         param="dimensions")
        if not isinstance(dims, int) or dims < 1:
            return error("Invalid value for 'dimensions'.", param="dimensions",
                         code="invalid_value")
    return None


def validate_completions(body: dict[str, Any]) -> dict[str, Any] | None:
    problem = _unrecognized(body, {
        "model", "prompt", "suffix", "max_tokens", "temperature", "top_p", "n", "stream",
        "stream_options", "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty",
        "best_of", "logit_bias", "user", "seed"})
    if problem:
        return problem
    model = body.get("model")
    if not isinstance(model, str):
        return error("you must provide a model parameter")
    prompt = body.get("prompt")
    if not (isinstance(prompt, str) or _is_tokens(prompt) or isinstance(prompt, list)
            and prompt and (all(isinstance(p, str) for p in prompt)
                            or all(_is_tokens(p) for p in prompt))):
        return error("'prompt' is a required property", param="prompt")
    if body.get("stream_options") is not None and not body.get("stream"):
        return error("The 'stream_options' parameter is only allowed when 'stream' is "
                     "enabled.", param="stream_options", code="invalid_value")
    return None


def _error(status: int, err: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": err}),
                        content_type="application/json")


def _mask(key: str) -> str:
    return f"{key[:3]}*{key[-4:]}" if len(key) > 8 else "*" * len(key)


class _Answer:
    """One completion (JSON or chunks) for a validated request and a reply."""

    def __init__(self, body: dict[str, Any], reply: Reply) -> None:
        self.model = body["model"]
        self.id = "chatcmpl-fake" + format(abs(hash(orjson.dumps(body))) % 10**12, "012d")
        self.created = 1_700_000_000
        self.n = body.get("n") or 1
        self.reply = reply
        self.calls = reply.tool_calls or []
        self.finish = reply.finish_reason or ("tool_calls" if self.calls else "stop")
        options = body.get("stream_options") or {}
        self.include_usage = bool(options.get("include_usage")) and reply.usage_chunk
        prompt = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 7
        # every choice is generated and billed: OpenAI's completion_tokens sum them
        completion = ((len(reply.text) + sum(len(c["arguments"]) for c in self.calls)) // 4
                      + 1) * self.n
        self.usage = reply.usage or {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}
        self.usage = {**self.usage,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {
                          "reasoning_tokens": 0, "audio_tokens": 0,
                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant",
                                   "content": None if self.calls else self.reply.text,
                                   "refusal": None, "annotations": []}
        if self.calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in self.calls]
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": i, "message": message, "logprobs": None,
                             "finish_reason": self.finish} for i in range(self.n)],
                "usage": self.usage, "service_tier": "default",
                "system_fingerprint": "fp_fake0001"}

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "service_tier": "default", "system_fingerprint": "fp_fake0001",
            "choices": [{"index": index, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def events(self) -> list[bytes]:
        """Every SSE event of the stream, in order, one write each."""
        out = []
        for i in range(self.n):
            first = {"role": "assistant", "content": None if self.calls else "",
                     "refusal": None}
            out.append(self._chunk(i, first))
            for piece in _WORD.findall(self.reply.text) if not self.calls else ():
                out.append(self._chunk(i, {"content": piece}))
            for k, call in enumerate(self.calls):
                out.append(self._chunk(i, {"tool_calls": [{
                    "index": k, "id": call["id"], "type": "function",
                    "function": {"name": call["name"], "arguments": ""}}]}))
                args = call["arguments"]
                for at in range(0, len(args), 7):
                    out.append(self._chunk(i, {"tool_calls": [{
                        "index": k, "function": {"arguments": args[at:at + 7]}}]}))
            out.append(self._chunk(i, {}, self.finish))
        if self.include_usage:
            out.append(b"data: " + orjson.dumps({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "service_tier": "default",
                "system_fingerprint": "fp_fake0001", "choices": [],
                "usage": self.usage}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out
