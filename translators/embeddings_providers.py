"""One embeddings translator per provider type (see translators/embeddings.py).

- openai (and every OpenAI-compatible server): `POST {base_url}/embeddings`,
  the request forwarded as sent, the answer passed through as the upstream's bytes;
- azure: `POST {base_url}/openai/deployments/{deployment}/embeddings?api-version=…`
  (or `/openai/v1/embeddings` with `api_style: v1`), key in `api-key`;
- gemini: `:embedContent` for one text, `:batchEmbedContents` for several,
  key in `x-goog-api-key` only; `dimensions` → `outputDimensionality`;
- ollama: `POST {base_url}/api/embed`;
- mock: deterministic unit vectors from a hash of the model and input.

Upstreams that return floats only get base64 from the gateway itself.
Upstream model names enter a URL path only after the same safe-pattern checks
as their chat translators. A provider type without an embeddings endpoint
(anthropic) answers 400 before anything is sent.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.core.errors import GatewayError, UpstreamError, upstream_protocol
from proxy.core.usage import Usage, token_count
from translators.azure import AzureFamily
from translators.base import Translator, UpstreamRequest
from translators.common import upstream_json
from translators.embeddings import (
    EmbeddingsRequest,
    EmbeddingsTranslator,
    embeddings_list,
    vectors_of,
)
from translators.gemini import GeminiFamily, model_path
from translators.ollama import OllamaFamily
from translators.openai import OpenAIFamily

MOCK_DIMENSIONS = 256


class OpenAIEmbeddings(EmbeddingsTranslator, OpenAIFamily):
    """Forwarded as sent; the answer passes through as the upstream's own bytes."""

    def url(self, target) -> str:
        return self.provider.base_url + "/embeddings"

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        req = self.req
        body: dict[str, Any] = {"input": req.input, "model": target.model}
        if req.encoding_format == "base64":
            body["encoding_format"] = "base64"
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.user is not None:
            body["user"] = req.user
        return UpstreamRequest("POST", self.url(target), self.json_headers(), orjson.dumps(body),
                               False)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        parsed = upstream_json(self.provider.name, body)
        data = parsed.get("data")
        if not isinstance(data, list) or len(data) != self.req.count:
            raise upstream_protocol(self.provider.name, "expected one embedding per input")
        usage = parsed.get("usage")
        prompt = token_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0
        return body, Usage(prompt_tokens=prompt)  # the upstream's own bytes


class AzureEmbeddings(AzureFamily, OpenAIEmbeddings):
    def url(self, target) -> str:
        return self.azure_url(target, "embeddings")


class GeminiEmbeddings(EmbeddingsTranslator, GeminiFamily):
    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        texts = self.req.text_only(self.provider.name)
        name = model_path(target.model)
        self.model = name
        dims = self.req.dimensions

        def one(text: str) -> dict[str, Any]:
            item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
            if dims is not None:
                item["outputDimensionality"] = dims
            return item

        base = f"{self.provider.base_url}/v1beta/models/{name}"
        if self.req.single:
            url, body = base + ":embedContent", one(texts[0])
        else:
            url = base + ":batchEmbedContents"
            body = {"requests": [{"model": f"models/{name}", **one(t)} for t in texts]}
        return UpstreamRequest("POST", url, self.json_headers(), orjson.dumps(body), False)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        parsed = upstream_json(self.provider.name, body)
        if self.req.single:
            items = [parsed.get("embedding")]
        else:
            items = parsed.get("embeddings")
        if not isinstance(items, list):
            raise upstream_protocol(self.provider.name, "no embeddings in the answer")
        values = [item.get("values") if isinstance(item, dict) else None for item in items]
        vectors = vectors_of(self.provider.name, values, self.req.count)
        tokens = self.req.estimated_tokens()  # Gemini reports no token count here
        return (embeddings_list(vectors, self.model, tokens, self.req.encoding_format),
                Usage(prompt_tokens=tokens))


class OllamaEmbeddings(EmbeddingsTranslator, OllamaFamily):
    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        texts = self.req.text_only(self.provider.name)
        self.model = target.model
        body: dict[str, Any] = {"model": target.model,
                                "input": texts[0] if self.req.single else list(texts)}
        if self.req.dimensions is not None:
            body["dimensions"] = self.req.dimensions
        return UpstreamRequest("POST", self.provider.base_url + "/api/embed",
                               self.json_headers(), orjson.dumps(body), False)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        parsed = upstream_json(self.provider.name, body)
        vectors = vectors_of(self.provider.name, parsed.get("embeddings"), self.req.count)
        count = parsed.get("prompt_eval_count")
        tokens = token_count(count) if type(count) is int else self.req.estimated_tokens()
        model = parsed.get("model") if isinstance(parsed.get("model"), str) else self.model
        return (embeddings_list(vectors, model, tokens, self.req.encoding_format),
                Usage(prompt_tokens=tokens))


class MockEmbeddings(EmbeddingsTranslator, OpenAIFamily):
    """Offline: the same input and model always give the same unit vector."""

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        self.model = target.model
        body = {"model": target.model, "input": self.req.input}  # for the in-process transport
        return UpstreamRequest("POST", self.provider.base_url + "/embeddings",
                               self.json_headers(), orjson.dumps(body), False)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        dims = self.req.dimensions or MOCK_DIMENSIONS
        items: tuple[Any, ...] = self.req.texts if self.req.texts is not None \
            else self.req.tokens or ()
        vectors = [mock_vector(self.model, orjson.dumps(item), dims) for item in items]
        tokens = self.req.estimated_tokens()
        return (embeddings_list(vectors, self.model, tokens, self.req.encoding_format),
                Usage(prompt_tokens=tokens))


def mock_vector(model: str, seed: bytes, dims: int) -> list[float]:
    raw = hashlib.shake_256(model.encode() + b"\0" + seed).digest(2 * dims)
    values = [x / 32768.0 - 1.0 for x in struct.unpack(f"<{dims}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded through float32, so the float and base64 forms carry the same numbers.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f",
                                                        *(v / norm for v in values))))


class NoEmbeddings(EmbeddingsTranslator):
    """A provider type with no embeddings endpoint: a 400 naming the target, and nothing
    is sent (so nothing can come back to read)."""

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        raise GatewayError(
            400, f"The model's target '{target.label}' is a '{self.provider.type}' provider, "
                 "which has no embeddings endpoint.",
            "invalid_request_error", param="model", code="unsupported_model")

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        raise upstream_protocol(self.provider.name, "it has no embeddings endpoint")

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        return upstream_protocol(self.provider.name, "it has no embeddings endpoint")


EMBEDDINGS: dict[str, type[EmbeddingsTranslator]] = {
    "openai": OpenAIEmbeddings,
    "azure": AzureEmbeddings,
    "gemini": GeminiEmbeddings,
    "ollama": OllamaEmbeddings,
    "mock": MockEmbeddings,
}


def embeddings_translators(req: EmbeddingsRequest) -> Callable[[Translator], Translator]:
    """The Exchange hook of an embeddings request: every attempt is served by the
    embeddings translator of its provider's type (the attempt's chat translator only
    names the provider)."""
    return lambda chat: EMBEDDINGS.get(chat.provider.type, NoEmbeddings)(chat.provider, req)
