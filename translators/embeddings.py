"""`POST /v1/embeddings`: the validated request, and what every provider type's
embeddings translator shares.

An embeddings translator is a member of its provider type's family (its
credentials and error classification: translators/base.py) with the same
contract as chat: `request` builds the upstream call from the request the
handler validated once, `response` maps the answer to OpenAI's list with its
usage (completion tokens 0), `error` is the family's, so retry, fallback and
breakers treat it like chat. Embeddings never stream. One translator per
provider type: translators/embeddings_providers.py.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from proxy.core.errors import bad_request, upstream_protocol
from proxy.core.framing import Event
from proxy.core.usage import Usage
from translators.base import Translator


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated `/v1/embeddings` request (proxy/server/embeddings.py checks it once)."""

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


class EmbeddingsTranslator(Translator):
    """One attempt of an embeddings request; a provider type's subclass also inherits its
    family (e.g. `class GeminiEmbeddings(EmbeddingsTranslator, GeminiFamily)`)."""

    def __init__(self, provider, req: EmbeddingsRequest) -> None:
        super().__init__(provider)
        self.req = req
        self.model = ""  # the upstream model, for answers that do not name it

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        raise upstream_protocol(self.provider.name, "embeddings never stream")
