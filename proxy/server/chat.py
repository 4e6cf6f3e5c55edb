"""POST /v1/chat/completions: parse once, check, resolve the model, run the pipeline."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.core.errors import bad_request
from proxy.server.endpoint import answer, exchange_for
from proxy.server.gateway import GATEWAY
from proxy.config.types import ServerConfig
from proxy.server.requests import (
    check_choices,
    check_forbidden,
    check_max_tokens,
    check_model,
    check_stream_options,
    json_type,
    read_json,
)
from translators.functions import functions_adapter


def _parse_chat(body: dict[str, Any], server: ServerConfig) -> bool:
    """Check what every upstream needs; returns whether the client wants a stream."""
    check_forbidden(body)
    max_messages = server.max_messages
    check_model(body)
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
    check_stream_options(body, stream)
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None:
            check_max_tokens(name, value)
    check_choices(body, server)
    return bool(stream)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY].pinned  # this request's generation, looked up once
    key = gateway.authenticate(request.headers)  # 401 before anything else
    body = await read_json(request)
    stream = _parse_chat(body, gateway.config.server)
    # legacy `functions` (translators/functions.py); None for every other request
    ex = exchange_for(gateway, request, body, stream=stream, key=key,
                      adapter=functions_adapter(body))
    await gateway.pipeline(ex)
    return answer(ex)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)

