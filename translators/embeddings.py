"""`POST /v1/embeddings` as an adapter around the attempt's chat translator.

The chat translators stay untouched: `EmbeddingsTranslator.request` ignores
the chat translator and asks the provider type's embeddings mapper
(translators/embeddings_providers.py) for the upstream request; `response`
maps the upstream's body back to OpenAI's list; `error` is the chat
translator's, so errors are classified the same way for retry, fallback and
breakers. Streaming is never used. Usage (completion tokens 0) reaches the
ledger through `ex.usage` like chat.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from proxy.core.errors import bad_request, upstream_protocol
from proxy.core.usage import Usage
from translators.base import Translator, UpstreamRequest


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated `/v1/embeddings` request (proxy/server/legacy.py checks it once)."""

    input: Any  # exactly as the client sent it (for OpenAI-format upstreams)
    texts: tuple[str, ...] | None  # the input as strings, or None for token arrays
    tokens: tuple[tuple[int, ...], ...] | None  # the input as token arrays
    single: bool  # one input (a string or one token array) rather than a list
    encoding_format: str  # "float" or "base64"
    dimensions: int | None
    user: str | None

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.tokens or ())

    def text_only(self, provider: str) -> tuple[str, ...]:
        """The inputs as strings, or a 400 naming `input` for an upstream that takes no tokens."""
        if self.texts is None:
            raise bad_request(f"The upstream of provider '{provider}' embeds text only: send "
                              "'input' as a string or an array of strings, not token arrays.",
                              param="input", code="unsupported_value")
        return self.texts

    def estimated_tokens(self) -> int:
        """About four characters a token (for upstreams that report no usage)."""
        if self.texts is None:
            return sum(len(t) for t in self.tokens or ())
        return sum((len(t) + 3) // 4 for t in self.texts)


def encode_base64(vector: list[float]) -> str:
    """Little-endian float32, base64: exactly what OpenAI sends for `encoding_format: base64`."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_list(vectors: list[list[float]], model: str, prompt_tokens: int,
                    encoding_format: str) -> dict[str, Any]:
    """OpenAI's answer for `vectors`, encoded as the client asked."""
    b64 = encoding_format == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": encode_base64(v) if b64 else v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def vectors_of(provider: str, values: Any, count: int) -> list[list[float]]:
    """Check an upstream's vectors: `count` lists of numbers."""
    if (not isinstance(values, list) or len(values) != count
            or not all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                       for v in values)):
        raise upstream_protocol(provider, f"expected {count} embedding vector(s)")
    return values


class EmbeddingsMapper:
    """One provider type's embeddings endpoint: build the request, read the answer."""

    def __init__(self, inner: Translator, req: EmbeddingsRequest) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.req = req
        self.model = ""

    def request(self, target) -> UpstreamRequest:
        raise NotImplementedError

    def response(self, body: bytes) -> tuple[bytes | dict[str, Any], Usage]:
        raise NotImplementedError
