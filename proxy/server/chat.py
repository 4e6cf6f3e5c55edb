"""HTTP handlers: parse once, check, resolve the model, run the pipeline."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from policies.auth import allowed
from proxy.core.errors import GatewayError, bad_request, invalid_json, model_not_found
from proxy.core.exchange import Exchange
from proxy.server.gateway import GATEWAY, REQUEST_ID
from translators.legacy import functions_adapter

# Request-level fields that would let a client choose where gatewise connects
# or with which credentials. Refused, never ignored (DESIGN.md §8).
FORBIDDEN_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "azure_endpoint",
    "azure_ad_token", "azure_deployment", "deployment_id", "organization", "project",
    "custom_llm_provider", "extra_headers", "headers", "endpoint", "url", "proxy",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "vertex_project", "vertex_location", "vertex_credentials", "credentials",
})
_JSON = "application/json"


def check_forbidden(body: dict[str, Any]) -> None:
    hits = FORBIDDEN_FIELDS.intersection(body)
    extra = body.get("extra_body")
    if isinstance(extra, dict):
        hits |= {f"extra_body.{name}" for name in FORBIDDEN_FIELDS.intersection(extra)}
    if hits:
        name = sorted(hits)[0]
        raise bad_request(f"The request field '{name}' is not accepted: upstream endpoints and "
                          "credentials come only from the gateway's configuration.",
                          param=name, code="forbidden_parameter")


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_json() from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _parse_chat(body: dict[str, Any], max_messages: int) -> bool:
    """Check what every upstream needs; returns whether the client wants a stream."""
    check_forbidden(body)
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise bad_request(f"Invalid type for 'model': expected a string, but got "
                          f"{json_type(model)} instead.", param="model", code="invalid_type")
    messages = body.get("messages")
    if messages is None:
        raise bad_request("Missing required parameter: 'messages'.", param="messages",
                          code="missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request(f"Invalid type for 'messages': expected an array, but got "
                          f"{json_type(messages)} instead.", param="messages",
                          code="invalid_type")
    if not messages:
        raise bad_request("Invalid 'messages': empty array. Expected an array with minimum "
                          "length 1, but got an empty array instead.", param="messages",
                          code="empty_array")
    if len(messages) > max_messages:
        raise bad_request(f"Invalid 'messages': array too long. Expected an array with maximum "
                          f"length {max_messages}, but got an array with length "
                          f"{len(messages)} instead.", param="messages", code="array_above_max_length")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"Invalid 'messages[{i}]': each message must be an object with a "
                              "'role'.", param=f"messages[{i}]", code="invalid_type")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"Invalid type for 'stream': expected a boolean, but got "
                          f"{json_type(stream)} instead.", param="stream", code="invalid_type")
    if body.get("stream_options") is not None and not stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.", param="stream_options", code="invalid_value")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None:
            check_max_tokens(name, value)
    return bool(stream)


#: no model writes more; a larger ask is a client bug, and it would size budget
#: reservations and rate-limit estimates absurdly before any upstream could refuse it
MAX_OUTPUT_TOKENS = 1_000_000


def check_max_tokens(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Invalid type for '{name}': expected an integer, but got "
                          f"{json_type(value)} instead.", param=name, code="invalid_type")
    if value < 1:
        raise bad_request(f"Invalid '{name}': integer below minimum value. Expected a value "
                          f">= 1, but got {value} instead.", param=name,
                          code="integer_below_min_value")
    if value > MAX_OUTPUT_TOKENS:
        raise bad_request(f"Invalid '{name}': integer above maximum value. Expected a value "
                          f"<= {MAX_OUTPUT_TOKENS}, but got {value} instead.", param=name,
                          code="integer_above_max_value")


def json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a decimal", type(None): "null"}.get(type(value), "a value")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)  # 401 before anything else
    body = await read_json(request)
    stream = _parse_chat(body, gateway.config.server.max_messages)
    model = gateway.config.models.get(body["model"])
    if model is None:
        raise model_not_found(body["model"])
    ex = Exchange(request_id=request[REQUEST_ID], http=request, body=body, model=model,
                  stream=stream, key=key, key_name=key.name if key is not None else None,
                  adapter=functions_adapter(body))  # legacy `functions`: translators/legacy.py
    await gateway.pipeline(ex)
    if ex.response is not None:
        return ex.response
    headers = ex.gateway_headers()
    headers["content-type"] = _JSON
    return web.Response(body=ex.response_body, status=ex.status or 200, headers=headers)


async def list_models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    if key is None or not key.models:
        return web.Response(body=gateway.models_body, content_type=_JSON)
    data = [e for name, e in gateway.model_entries.items() if allowed(key, name)]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)


async def retrieve_model(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    name = request.match_info["model"]
    entry = gateway.model_entries.get(name)
    if entry is None or (key is not None and not allowed(key, name)):
        raise model_not_found(name)
    return web.Response(body=orjson.dumps(entry), content_type=_JSON)


async def health_live(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def health_ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    usable = gateway.usable_models()
    ready = bool(usable) and gateway.session_open
    body = {"status": "ready" if ready else "unavailable", "models": len(usable),
            "unavailable_models": sorted(set(gateway.config.models) - set(usable))}
    state = gateway.state_status()  # shared state (Redis): degraded while unreachable
    if state is not None:
        body["state"] = state
        if ready and state.get("redis") != "ok":
            body["status"] = "degraded"  # still 200: every instance shares this Redis
    return web.Response(body=orjson.dumps(body), status=200 if ready else 503,
                        content_type=_JSON)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
    from proxy.server.legacy import add_legacy_routes  # it imports this module

    add_legacy_routes(app)


__all__ = ["add_routes", "GatewayError"]
