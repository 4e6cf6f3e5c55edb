"""Reading a client's request body: one parse, and the checks every endpoint shares."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.core.errors import bad_request, invalid_json

# Request-level fields that would let a client choose where gatewise connects
# or with which credentials. Refused, never ignored (DESIGN.md §8).
FORBIDDEN_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "azure_endpoint",
    "azure_ad_token", "azure_deployment", "deployment_id", "organization", "project",
    "custom_llm_provider", "extra_headers", "headers", "endpoint", "url", "proxy",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "vertex_project", "vertex_location", "vertex_credentials", "credentials",
})


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


def check_model(body: dict[str, Any]) -> str:
    """The requested model's name: present, and a string."""
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise bad_request(f"Invalid type for 'model': expected a string, but got "
                          f"{json_type(model)} instead.", param="model", code="invalid_type")
    return model


def check_stream_options(body: dict[str, Any], stream: Any) -> None:
    """`stream_options`: an object, and only with `stream`."""
    options = body.get("stream_options")
    if options is None:
        return
    if not stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.", param="stream_options", code="invalid_value")
    if not isinstance(options, dict):
        raise bad_request(f"Invalid type for 'stream_options': expected an object, but got "
                          f"{json_type(options)} instead.", param="stream_options",
                          code="invalid_type")


def check_known(body: dict[str, Any], known: frozenset[str]) -> None:
    """A field the endpoint does not know is a 400, as on OpenAI's legacy endpoints."""
    for name in body:
        if name not in known:
            raise bad_request(f"Unrecognized request argument supplied: {name}", param=name,
                              code="unknown_parameter")


def is_tokens(value: Any) -> bool:
    """A non-empty array of token ids (integers, not booleans)."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value))


def json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a decimal", type(None): "null"}.get(type(value), "a value")
