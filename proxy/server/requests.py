"""Reading a client's request body: one parse, and the checks every endpoint shares.

`read_json` is the one place a body is parsed, for every endpoint, and it
refuses a body nested deeper than `server.max_json_depth`: whatever a request
holds is then shallow enough for every translator, the cache key and the
prompt estimate (none of them has to guard against recursion itself).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.config.types import ServerConfig
from proxy.core.errors import GatewayError, bad_request, invalid_json
from proxy.server.gateway import GATEWAY

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
    limit = request.app[GATEWAY].config.server.max_json_depth
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own limit (1024): valid, but too deep
            raise _too_deep(limit) from None
        raise invalid_json() from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    # A body cannot nest deeper than it has brackets: most requests skip the walk.
    if raw.count(b"{") + raw.count(b"[") > limit and _deeper_than(body, limit - 1):
        raise _too_deep(limit)
    return body


def _too_deep(limit: int) -> GatewayError:
    return bad_request(f"The request body is nested too deeply: at most {limit} levels of JSON "
                       "objects and arrays are accepted (server.max_json_depth).",
                       code="json_too_deep")


def _deeper_than(node: dict | list, levels: int) -> bool:
    """Whether `node` holds containers more than `levels` levels below it (the
    recursion is bounded by `levels`, which the config keeps small)."""
    if levels < 0:
        return True
    for child in node.values() if type(node) is dict else node:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper_than(child, levels - 1):
            return True
    return False


def check_choices(body: dict[str, Any], server: ServerConfig) -> None:
    """`n` (each choice is billed) and the number of tools, within the configured caps."""
    n = body.get("n")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise bad_request(f"Invalid type for 'n': expected an integer, but got "
                              f"{json_type(n)} instead.", param="n", code="invalid_type")
        if n < 1:
            raise bad_request(f"Invalid 'n': integer below minimum value. Expected a value >= 1, "
                              f"but got {n} instead.", param="n", code="integer_below_min_value")
        if n > server.max_n:
            raise bad_request(f"Invalid 'n': integer above maximum value. Expected a value <= "
                              f"{server.max_n}, but got {n} instead (server.max_n).", param="n",
                              code="integer_above_max_value")
    tools, functions = body.get("tools"), body.get("functions")
    if tools is None and functions is None:
        return
    limit = server.max_tools
    for name, value in (("tools", tools), ("functions", functions)):
        if isinstance(value, list) and len(value) > limit:
            raise bad_request(f"Invalid '{name}': array too long. Expected an array with maximum "
                              f"length {limit}, but got an array with length {len(value)} "
                              "instead (server.max_tools).", param=name,
                              code="array_above_max_length")


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
