"""`POST /v1/completions` (and `/completions`): parse once, check, resolve the model,
run the same pipeline as chat (auth, limits, budgets, routing, fallback).

The request becomes an Exchange whose `adapter` gives every attempt a
completions translator (translators/completions.py). `ex.body` stays the
client's request, so cache keys and logs never confuse it with a chat request;
the budget estimate is set here, since it is not a chat body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.core.errors import GatewayError, bad_request
from proxy.core.pricing import Estimate
from proxy.server.endpoint import answer, exchange_for, read_checked
from proxy.server.gateway import GATEWAY
from proxy.server.requests import (check_choices, check_max_tokens, check_stream_options,
                                   is_tokens, json_type)
from translators.completions import LegacyRequest

LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default on /v1/completions
_CARRIED = ("max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
            "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed")
_COMPLETION_FIELDS = frozenset(_CARRIED + ("model", "prompt", "suffix", "echo", "logprobs",
                                           "best_of", "fallbacks", "extra_body"))


async def completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key, body = await read_checked(gateway, request, _COMPLETION_FIELDS)
    check_choices(body, gateway.config.server)
    legacy = legacy_request(body)
    stream = bool(body.get("stream"))
    cap = legacy.chat.get("max_tokens")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    best_of = body.get("best_of")  # generated (and billed) server-side, n of them returned
    n = max(n, best_of) if isinstance(best_of, int) and not isinstance(best_of, bool) else n
    prompts = len(body["prompt"]) if isinstance(body.get("prompt"), list) and not is_tokens(
        body["prompt"]) else 1
    ex = exchange_for(gateway, request, body, stream=stream, key=key, adapter=legacy.translator,
                      endpoint="completions")
    ex.estimate = Estimate(_prompt_tokens(body.get("prompt")) + 7,
                           cap if isinstance(cap, int) and cap > 0 else None,
                           max(1, n) * max(1, prompts))  # a choice per prompt, n each
    await gateway.pipeline(ex)
    return answer(ex)


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return (len(prompt) + 3) // 4
    if is_tokens(prompt):
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
    if not (isinstance(prompt, str) or is_tokens(prompt) or (
            isinstance(prompt, list) and prompt
            and (all(isinstance(p, str) for p in prompt) or all(is_tokens(p) for p in prompt)))):
        raise bad_request("Invalid 'prompt': expected a string, an array of strings, an array "
                          "of tokens or an array of token arrays.", param="prompt",
                          code="invalid_type")
    for name in ("stream", "echo"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise bad_request(f"Invalid type for '{name}': expected a boolean, but got "
                              f"{json_type(value)} instead.", param=name, code="invalid_type")
    check_stream_options(body, body.get("stream"))
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


def add_completions_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
