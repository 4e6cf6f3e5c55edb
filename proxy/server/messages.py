"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API in
front of every upstream.

The request becomes the one internal Exchange (its body the chat translation,
translators/inbound_messages.py), so keys, allow-lists, limits, budgets,
routing, fallbacks, breakers, the ledger, metrics and traces work as for chat.
Each attempt's adapter (translators/inbound_messages_native.py) sends the
client's own body to an Anthropic upstream and the chat body to any other;
the answer is an Anthropic message, streams use Anthropic's event grammar
(translators/inbound_messages_stream.py), and errors are in Anthropic's
envelope (proxy/server/anthropic_api.py). See docs/messages.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from proxy.core.errors import ErrorClass, GatewayError, UpstreamError, model_not_found
from proxy.core.exchange import Exchange
from proxy.core.pricing import estimate_body
from proxy.server.anthropic_api import check_body, client_key, messages_request
from proxy.server.gateway import GATEWAY, REQUEST_ID
from proxy.server.requests import check_choices, read_json
from translators.anthropic import AnthropicTranslator
from translators.base import UpstreamRequest
from translators.inbound_messages import translate
from translators.inbound_messages_native import (
    client_betas,
    client_version,
    forwarded_betas,
)
from translators.inbound_messages_stream import MessagesEgress

log = logging.getLogger("gatewise")
#: an Anthropic upstream's count_tokens answer is passed on for these; others fall back
#: to the estimate (the count is a convenience, never worth failing a client over)
_CLIENT_ERRORS = frozenset({ErrorClass.BAD_REQUEST, ErrorClass.CONTEXT_WINDOW,
                            ErrorClass.NOT_FOUND, ErrorClass.CONTENT_FILTER})

_JSON = "application/json"


async def create_message(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key = client_key(gateway, request.headers)  # 401 before anything else
    body = await read_json(request)
    stream = check_body(body, gateway.config.server.max_messages)
    model = gateway.config.models.get(body["model"])
    if model is None:
        raise model_not_found(body["model"])
    req = messages_request(request, body)
    check_choices(req.translated.chat, gateway.config.server)  # the cap on tools
    rid = request[REQUEST_ID]
    ex = Exchange(request_id=rid, http=request, body=req.translated.chat, model=model,
                  stream=stream, key=key, key_name=key.name if key is not None else None,
                  adapter=req.adapter, endpoint="messages")
    ex.extra_headers = {"request-id": rid}
    if stream:
        ex.egress = MessagesEgress(req, rid)
    await gateway.pipeline(ex)
    if ex.response is not None:
        return ex.response
    headers = ex.gateway_headers()
    headers["content-type"] = _JSON
    return web.Response(body=ex.response_body, status=ex.status or 200, headers=headers)


async def count_tokens(request: web.Request) -> web.Response:
    """Exact from the model's first usable Anthropic target; elsewhere the gateway's own
    estimate, flagged in the body (`"estimated": true`) and the
    `x-gatewise-token-count` header."""
    gateway = request.app[GATEWAY]
    key = client_key(gateway, request.headers)
    body = await read_json(request)
    check_body(body, gateway.config.server.max_messages, counting=True)
    name = body["model"]
    model = gateway.config.models.get(name)
    if model is None:
        raise model_not_found(name)
    if key is not None and key.models and not key.allows(name):
        raise GatewayError(403, f"The key '{key.name}' is not allowed to use the model "
                                f"'{name}'.", "invalid_request_error", param="model",
                           code="model_not_allowed")
    for target in model.targets:
        provider = gateway.config.providers[target.provider]
        if provider.type == "anthropic" and provider.enabled \
                and not gateway.dispatcher.breakers.is_open(target.label):
            answer = await _upstream_count(gateway, provider, target, request, body)
            if answer is not None:
                return web.Response(body=answer, content_type=_JSON,
                                    headers={"x-gatewise-token-count": "upstream"})
            break
    tokens = estimate_body(translate(body).chat).prompt_tokens
    return web.Response(body=orjson.dumps({"input_tokens": tokens, "estimated": True}),
                        content_type=_JSON, headers={"x-gatewise-token-count": "estimate"})


async def _upstream_count(gateway: Any, provider: Any, target: Any, request: web.Request,
                          body: dict[str, Any]) -> bytes | None:
    """The upstream's own answer, or None when it could not give one (the client's own
    mistakes, which the upstream names, are raised)."""
    headers = {"content-type": _JSON, **provider.headers,
               "anthropic-version": client_version(request.headers.get("anthropic-version"))
               or provider.options.get("anthropic_version") or "2023-06-01"}
    betas = forwarded_betas(provider.options,
                            client_betas(request.headers.get("anthropic-beta")))
    if betas:
        headers["anthropic-beta"] = betas
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    upstream = UpstreamRequest("POST", provider.base_url + "/v1/messages/count_tokens",
                               headers, orjson.dumps({**body, "model": target.model}), False)
    try:
        async with asyncio.timeout(provider.timeouts.first_token):
            async with gateway.transports[provider.name].open(upstream,
                                                               provider.timeouts) as resp:
                status, raw, answer_headers = resp.status, await resp.read(), resp.headers
    except (UpstreamError, TimeoutError) as exc:
        log.info(f"count_tokens on {target.label} failed ({type(exc).__name__}): estimating")
        return None
    if status == 200:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        count = parsed.get("input_tokens") if isinstance(parsed, dict) else None
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return raw
        return None
    err = AnthropicTranslator(provider).error(status, answer_headers, raw)
    if err.error_class in _CLIENT_ERRORS:
        raise err
    return None


def add_messages_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", create_message)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
