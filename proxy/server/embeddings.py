"""`POST /v1/embeddings` (and `/embeddings`): parse once, check, resolve the model,
run the same pipeline as chat (auth, limits, budgets, routing, fallback).

The request becomes an Exchange whose `adapter` gives every attempt the
embeddings translator of its provider's type (translators/embeddings_providers.py);
the budget estimate is the input's size, with no output.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.core.errors import bad_request
from proxy.core.pricing import Estimate
from proxy.server.endpoint import answer, exchange_for, read_checked
from proxy.server.gateway import GATEWAY
from proxy.server.requests import is_tokens
from translators.embeddings import EmbeddingsRequest
from translators.embeddings_providers import embeddings_translators

_EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user",
                               "fallbacks", "extra_body"})
MAX_EMBEDDING_INPUTS = 2048


async def embeddings(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key, body = await read_checked(gateway, request, _EMBEDDING_FIELDS)
    req = embeddings_request(body)
    ex = exchange_for(gateway, request, body, stream=False, key=key,
                      adapter=embeddings_translators(req), endpoint="embeddings")
    ex.estimate = Estimate(req.estimated_tokens(), 0)
    await gateway.pipeline(ex)
    return answer(ex)


def embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    value = body.get("input")
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", param="input",
                          code="missing_required_parameter")
    texts = tokens = None
    if isinstance(value, str):
        texts, single = (value,), True
    elif is_tokens(value):
        tokens, single = (tuple(value),), True
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts, single = tuple(value), False
    elif isinstance(value, list) and value and all(is_tokens(v) for v in value):
        tokens, single = tuple(tuple(v) for v in value), False
    else:
        raise bad_request("Invalid 'input': expected a string, an array of strings, an array "
                          "of tokens or an array of token arrays.", param="input",
                          code="invalid_type")
    if texts is not None and any(not t for t in texts):
        raise bad_request("Invalid 'input': empty strings cannot be embedded.", param="input",
                          code="invalid_value")
    if len(texts or tokens or ()) > MAX_EMBEDDING_INPUTS:
        raise bad_request(f"Invalid 'input': at most {MAX_EMBEDDING_INPUTS} inputs per "
                          "request.", param="input", code="array_above_max_length")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise bad_request(f"Invalid value for 'encoding_format': expected 'float' or 'base64', "
                          f"but got {encoding!r}.", param="encoding_format",
                          code="invalid_value")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise bad_request("Invalid 'dimensions': expected a positive integer.",
                          param="dimensions", code="invalid_value")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("Invalid type for 'user': expected a string.", param="user",
                          code="invalid_type")
    return EmbeddingsRequest(value, texts, tokens, single, encoding or "float", dims, user)


def add_embeddings_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
