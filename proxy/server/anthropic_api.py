"""What every Anthropic-shaped route shares: the error envelope (the app's
middleware asks `speaks_anthropic` for each error), the caller's key from
`x-api-key`, and the checks the gateway itself needs of a Messages body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from proxy.core.errors import GatewayError, bad_request
from proxy.server.gateway import REQUEST_ID
from proxy.server.requests import MAX_OUTPUT_TOKENS, check_forbidden, json_type
from translators.inbound_messages import translate
from translators.inbound_messages_native import MessagesRequest, client_betas, client_version
from translators.inbound_messages_reply import error_body, error_status

_JSON = "application/json"


def speaks_anthropic(request: web.Request) -> bool:
    """Whether errors on this request go out in Anthropic's envelope."""
    path = request.path
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return path.startswith("/v1/models") and "anthropic-version" in request.headers


def anthropic_error_response(request: web.Request, err: GatewayError) -> web.Response:
    rid = request.get(REQUEST_ID)
    headers = {"content-type": _JSON, **err.headers}
    if rid:
        headers["request-id"] = rid  # where Anthropic's SDKs look for it
    return web.Response(status=error_status(err), body=error_body(err, rid), headers=headers)


def client_key(gateway: Any, headers: Mapping[str, str]) -> Any:
    """The caller's key from `x-api-key` (Anthropic's header), else `Authorization:
    Bearer` (Anthropic's auth tokens, and OpenAI's way): the same keys either way."""
    value = headers.get("x-api-key")
    if value and value.strip():
        return gateway.authenticate({"authorization": "Bearer " + value.strip()})
    return gateway.authenticate(headers)


def check_body(body: dict[str, Any], max_messages: int, *, counting: bool = False) -> bool:
    """What the gateway itself needs (a model to route, messages to estimate, a bounded
    output); the rest is checked by the upstream or its translation. Returns `stream`."""
    check_forbidden(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Field required" if model is None else
                       f"Input should be a valid string, got {json_type(model)}")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "Field required" if messages is None else
                       f"Input should be a valid list, got {json_type(messages)}")
    if not messages:
        raise _invalid("messages", "at least one message is required")
    if len(messages) > max_messages:
        raise _invalid("messages", f"at most {max_messages} messages are accepted by this "
                                   f"gateway (server.max_messages), got {len(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}", "Input should be a valid dictionary")
    if counting:
        return False
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens", "Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise _invalid("max_tokens", "Input should be a valid integer of at least 0")
    if max_tokens > MAX_OUTPUT_TOKENS:
        raise _invalid("max_tokens", f"Input should be less than or equal to "
                                     f"{MAX_OUTPUT_TOKENS}")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")
    return bool(stream)


def _invalid(field: str, message: str) -> GatewayError:
    return bad_request(f"{field}: {message}", param=field)


def messages_request(request: web.Request, body: dict[str, Any]) -> MessagesRequest:
    headers = request.headers
    return MessagesRequest(body, translate(body), client_version(headers.get("anthropic-version")),
                           client_betas(headers.get("anthropic-beta")))
