"""Faithful fakes of the embeddings endpoints of Gemini, Ollama and Azure OpenAI.

- Gemini: `POST /v1beta/models/{model}:embedContent` → `{"embedding": {"values"}}`,
  `:batchEmbedContents` (`requests[]`, each naming the URL's model) →
  `{"embeddings": [{"values"}]}`; the key in `x-goog-api-key` (a `key` query
  parameter is refused here: gatewise must never put it in a URL); unknown
  fields are INVALID_ARGUMENT in Google's error envelope.
- Ollama: `POST /api/embed` (`input` a string or strings, `dimensions`) →
  `{"model", "embeddings": [[...]], "total_duration", "load_duration", "prompt_eval_count"}`.
- Azure: `POST /openai/deployments/{deployment}/embeddings?api-version=…`, key in
  `api-key`, OpenAI's body and answer (`model` is the deployment's base model).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import fake_vector, validate_embeddings

API_KEY = "fake-embeddings-KEY-0123456789"


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class _Fake:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fail: list[tuple[int, Any]] = []  # the next answers, as (status, body)
        self.app = web.Application()

    async def _read(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        self.requests.append(Received(request.path, dict(request.query),
                                      {k.lower(): v for k, v in request.headers.items()}, body))
        return body

    @property
    def last(self) -> Any:
        return self.requests[-1].body


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload),
                        content_type="application/json")


# --- Gemini ---------------------------------------------------------------------------

GEMINI_DIMENSIONS = {"text-embedding-004": 768, "gemini-embedding-001": 3072}


def _google_error(status: int, message: str, code: str) -> web.Response:
    return _json(status, {"error": {"code": status, "message": message, "status": code}})


class FakeGeminiEmbeddings(_Fake):
    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/v1beta/models/{call}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if "key" in request.query:
            return _google_error(400, "The API key must not be sent in the URL (test fake).",
                                 "INVALID_ARGUMENT")
        if request.headers.get("x-goog-api-key") != API_KEY:
            return _google_error(400, "API key not valid. Please pass a valid API key.",
                                 "INVALID_ARGUMENT")
        model, _, method = request.match_info["call"].partition(":")
        if model not in GEMINI_DIMENSIONS:
            return _google_error(404, f"models/{model} is not found for API version v1beta, "
                                 "or is not supported for embedContent.", "NOT_FOUND")
        if self.fail:
            status, payload = self.fail.pop(0)
            return _json(status, payload)
        if not isinstance(body, dict):
            return _google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        if method == "embedContent":
            problem = _gemini_item(body, model, with_model=False)
            if problem:
                return _google_error(400, problem, "INVALID_ARGUMENT")
            return _json(200, {"embedding": {"values": _gemini_vector(body, model)}})
        if method == "batchEmbedContents":
            extra = set(body) - {"requests"}
            if extra:
                return _google_error(400, f'Invalid JSON payload received. Unknown name '
                                     f'"{min(extra)}": Cannot find field.',
                                     "INVALID_ARGUMENT")
            items = body.get("requests")
            if not isinstance(items, list) or not items:
                return _google_error(400, "* BatchEmbedContentsRequest.requests: contents is "
                                     "not specified", "INVALID_ARGUMENT")
            for item in items:
                problem = _gemini_item(item, model, with_model=True)
                if problem:
                    return _google_error(400, problem, "INVALID_ARGUMENT")
            return _json(200, {"embeddings": [{"values": _gemini_vector(item, model)}
                                              for item in items]})
        return _google_error(404, "Method not found.", "NOT_FOUND")


def _gemini_item(item: Any, model: str, *, with_model: bool) -> str | None:
    if not isinstance(item, dict):
        return "Invalid JSON payload received."
    known = {"content", "taskType", "title", "outputDimensionality"} | (
        {"model"} if with_model else set())
    extra = set(item) - known
    if extra:
        return f'Invalid JSON payload received. Unknown name "{min(extra)}": ' \
               "Cannot find field."
    if with_model and item.get("model") != f"models/{model}":
        return (f"Model name in the request ({item.get('model')}) does not match the model "
                f"in the URL (models/{model}).")
    parts = (item.get("content") or {}).get("parts") if isinstance(item.get("content"),
                                                                    dict) else None
    if not isinstance(parts, list) or not parts or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        return "* EmbedContentRequest.content: contents is not specified"
    dims = item.get("outputDimensionality")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        return "Invalid value at 'output_dimensionality'"
    return None


def _gemini_vector(item: dict[str, Any], model: str) -> list[float]:
    dims = item.get("outputDimensionality") or GEMINI_DIMENSIONS[model]
    return fake_vector(orjson.dumps(item["content"]), dims)


# --- Ollama ---------------------------------------------------------------------------

OLLAMA_MODELS = {"nomic-embed-text": 768, "all-minilm": 384}


class FakeOllamaEmbeddings(_Fake):
    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/api/embed", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if not isinstance(body, dict):
            return _json(400, {"error": "invalid character in JSON body"})
        model = body.get("model")
        if not model:
            return _json(400, {"error": "model is required"})
        if str(model).removesuffix(":latest") not in OLLAMA_MODELS:
            return _json(404, {"error": f'model "{model}" not found, try pulling it first'})
        if self.fail:
            status, payload = self.fail.pop(0)
            return _json(status, payload)
        value = body.get("input")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return _json(400, {"error": "invalid input type"})
        dims = body.get("dimensions") or OLLAMA_MODELS[str(model).removesuffix(":latest")]
        return _json(200, {"model": model,
                           "embeddings": [fake_vector(v.encode(), dims) for v in value],
                           "total_duration": 14143917, "load_duration": 1019500,
                           "prompt_eval_count": sum(len(v.split()) + 1 for v in value)})


# --- Azure OpenAI ---------------------------------------------------------------------

class FakeAzureEmbeddings(_Fake):
    def __init__(self, deployments: dict[str, str] | None = None) -> None:
        super().__init__()
        self.deployments = deployments or {"embed-prod": "text-embedding-3-small"}
        self.app.router.add_post("/openai/deployments/{deployment}/embeddings", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if "api-version" not in request.query:
            return _json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if request.headers.get("api-key") != API_KEY:
            return _json(401, {"error": {"code": "401", "message": (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.")}})
        base = self.deployments.get(request.match_info["deployment"])
        if base is None:
            return _json(404, {"error": {"code": "DeploymentNotFound", "message": (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.")}})
        if not isinstance(body, dict):
            return _json(400, {"error": {"code": "BadRequest", "message": "Invalid JSON."}})
        problem = validate_embeddings({"model": base, **body})
        if problem:
            return _json(400, {"error": problem})
        value = body["input"]
        items = [value] if isinstance(value, str) or isinstance(value[0], int) else value
        dims = body.get("dimensions") or 1536
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(items):
            vector = fake_vector(orjson.dumps(item), dims)
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(
                struct.pack(f"<{dims}f", *vector)).decode() if b64 else vector})
        tokens = sum(len(i) if isinstance(i, list) else len(i) // 4 + 1 for i in items)
        return _json(200, {"object": "list", "data": data, "model": base,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
