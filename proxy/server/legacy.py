"""`POST /v1/completions` and `POST /v1/embeddings`: parse once, check, resolve the
model, run the same pipeline as chat (auth, limits, budgets, routing, fallback).

Each request becomes an Exchange whose `adapter` (translators/legacy.py,
translators/embeddings.py) wraps every attempt's translator. `ex.body` stays
the client's request, so cache keys and logs never confuse it with a chat
request; the budget estimate is set here, since it is not a chat body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.core.errors import GatewayError, bad_request, model_not_found
from proxy.core.exchange import Exchange
from proxy.server.gateway import GATEWAY, REQUEST_ID
from proxy.server.requests import check_forbidden, check_max_tokens, json_type, read_json
from proxy.core.pricing import Estimate
from translators.embeddings import EmbeddingsRequest
from translators.embeddings_providers import EmbeddingsTranslator
from translators.legacy import LegacyRequest

_JSON = "application/json"
LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default on /v1/completions
_CARRIED = ("max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
            "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed")
_COMPLETION_FIELDS = frozenset(_CARRIED + ("model", "prompt", "suffix", "echo", "logprobs",
                                           "best_of", "fallbacks", "extra_body"))
_EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user",
                               "fallbacks", "extra_body"})
MAX_EMBEDDING_INPUTS = 2048


def _unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    for name in body:
        if name not in known:
            raise bad_request(f"Unrecognized request argument supplied: {name}", param=name,
                              code="unknown_parameter")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise bad_request(f"Invalid type for 'model': expected a string, but got "
                          f"{json_type(model)} instead.", param="model", code="invalid_type")
    return model


def _is_tokens(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value))


async def _serve(request: web.Request, body: dict[str, Any], stream: bool, adapter: Any,
                 estimate: Estimate, key: Any, endpoint: str) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    model = gateway.config.models.get(body["model"])
    if model is None:
        raise model_not_found(body["model"])
    ex = Exchange(request_id=request[REQUEST_ID], http=request, body=body, model=model,
                  stream=stream, key=key, key_name=key.name if key is not None else None,
                  adapter=adapter, endpoint=endpoint)
    ex.estimate = estimate
    await gateway.pipeline(ex)
    if ex.response is not None:
        return ex.response
    headers = ex.gateway_headers()
    headers["content-type"] = _JSON
    return web.Response(body=ex.response_body, status=ex.status or 200, headers=headers)


# --- /v1/completions ---------------------------------------------------------------------

async def completions(request: web.Request) -> web.StreamResponse:
    key = request.app[GATEWAY].authenticate(request.headers)  # 401 before anything else
    body = await read_json(request)
    check_forbidden(body)
    _model(body)
    _unknown(body, _COMPLETION_FIELDS)
    legacy = legacy_request(body)
    stream = bool(body.get("stream"))
    cap = legacy.chat.get("max_tokens")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    estimate = Estimate(_prompt_tokens(body.get("prompt")) + 7,
                        cap * max(1, n) if isinstance(cap, int) and cap > 0 else None)
    return await _serve(request, body, stream, legacy.adapter, estimate, key, "completions")


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return (len(prompt) + 3) // 4
    if _is_tokens(prompt):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(_prompt_tokens(p) for p in prompt)
    return 0


def legacy_request(body: dict[str, Any]) -> LegacyRequest:
    """Check the legacy request and convert it to chat once. What only a native
    completions upstream can do is kept as `problem`: a 400 naming the parameter,
    raised if the attempt's upstream speaks chat."""
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("Missing required parameter: 'prompt'.", param="prompt",
                          code="missing_required_parameter")
    if not (isinstance(prompt, str) or _is_tokens(prompt) or (
            isinstance(prompt, list) and prompt
            and (all(isinstance(p, str) for p in prompt) or all(_is_tokens(p) for p in prompt)))):
        raise bad_request("Invalid 'prompt': expected a string, an array of strings, an array "
                          "of tokens or an array of token arrays.", param="prompt",
                          code="invalid_type")
    for name in ("stream", "echo"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise bad_request(f"Invalid type for '{name}': expected a boolean, but got "
                              f"{json_type(value)} instead.", param=name, code="invalid_type")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.", param="stream_options", code="invalid_value")
    problem = None
    text = ""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        text = prompt
    else:
        problem = _cannot("prompt", "arrays of several prompts or token arrays need a native "
                          "completions upstream; send one prompt string per request")
    for name, why in (("suffix", "insertion needs a native completions upstream"),
                      ("logprobs", "log probabilities need a native completions upstream"),
                      ("best_of", "server-side best-of needs a native completions upstream")):
        value = body.get(name)
        if problem is None and value is not None and not (name == "best_of" and value == 1):
            problem = _cannot(name, why)
    chat: dict[str, Any] = {"model": body["model"],
                            "messages": [{"role": "user", "content": text}]}
    for name in _CARRIED:
        if name in body:
            chat[name] = body[name]
    if "max_tokens" not in body:
        chat["max_tokens"] = LEGACY_DEFAULT_MAX_TOKENS
    elif body["max_tokens"] is None:
        del chat["max_tokens"]
    else:
        check_max_tokens("max_tokens", body["max_tokens"])
    return LegacyRequest(chat, text, bool(body.get("echo")), problem)


def _cannot(param: str, why: str) -> GatewayError:
    return GatewayError(400, f"The '{param}' parameter cannot be honoured by this model's "
                        f"upstream, which speaks chat completions only: {why}.",
                        "invalid_request_error", param=param, code="unsupported_parameter")


# --- /v1/embeddings ----------------------------------------------------------------------

async def embeddings(request: web.Request) -> web.StreamResponse:
    key = request.app[GATEWAY].authenticate(request.headers)
    body = await read_json(request)
    check_forbidden(body)
    _model(body)
    _unknown(body, _EMBEDDING_FIELDS)
    req = embeddings_request(body)
    return await _serve(request, body, False, lambda inner: EmbeddingsTranslator(inner, req),
                        Estimate(req.estimated_tokens(), 0), key, "embeddings")


def embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    value = body.get("input")
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", param="input",
                          code="missing_required_parameter")
    texts = tokens = None
    if isinstance(value, str):
        texts, single = (value,), True
    elif _is_tokens(value):
        tokens, single = (tuple(value),), True
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts, single = tuple(value), False
    elif isinstance(value, list) and value and all(_is_tokens(v) for v in value):
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


def add_legacy_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
