"""`POST /v1/responses` and the stored responses' routes: the Responses API
as an adapter at the top.

A request is checked once (responses_request.py), its `previous_response_id`
replayed from the store, and it becomes the one internal Exchange: a chat
body for routing, limits, budgets, the cache and every translator
(responses_chat.py), with an Egress for the stream grammar
(responses_stream.py) and, where an attempt may go natively or needs to
refuse, an adapter (responses_native.py). The answer is converted back
(responses_output.py) and stored if asked. docs/responses.md is the user's view.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from aiohttp import web

from proxy.config.responses import is_native
from proxy.config.types import GatewayConfig, ModelConfig
from proxy.core.errors import GatewayError, bad_request, model_not_found
from proxy.core.exchange import Exchange
from proxy.server.gateway import GATEWAY, REQUEST_ID
from proxy.server.requests import check_choices, read_json
from proxy.server.responses_call import ResponsesCall
from proxy.server.responses_chat import chat_body
from proxy.server.responses_native import ResponsesAdapter
from proxy.server.responses_output import from_chat
from proxy.server.responses_request import ResponsesRequest, parse_request
from proxy.server.responses_stream import ResponsesEgress
from proxy.state.responses_store import StoredResponse

log = logging.getLogger("gatewise.responses")
_JSON = "application/json"
_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def previous_not_found(response_id: str) -> GatewayError:
    return bad_request(f"Previous response with id '{response_id}' not found.",
                       param="previous_response_id", code="previous_response_not_found")


def not_found(response_id: str) -> GatewayError:
    return GatewayError(404, f"Response with id '{response_id}' not found.",
                        "invalid_request_error")


def _owner(key: Any) -> str:
    return key.name if key is not None else ""


def _reaches_native(config: GatewayConfig, model: ModelConfig, body: dict[str, Any]) -> bool:
    """Whether any model this request may be served by has a native target."""
    names = {model.name, *model.fallbacks, *model.context_window_fallbacks}
    given = body.get("fallbacks")
    if isinstance(given, list):
        names.update(n for n in given if isinstance(n, str))
    for name in list(names):
        other = config.models.get(name)
        if other is not None:
            names.update(other.context_window_fallbacks)
    return any(is_native(config.providers[t.provider])
               for name in names if name in config.models
               for t in config.models[name].targets)


async def create_response(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)  # 401 before anything else
    body = await read_json(request)
    req = parse_request(body, gateway.config.server.max_messages)
    check_choices(body, gateway.config.server)  # the cap on tools
    model = gateway.config.models.get(req.model)
    if model is None:
        raise model_not_found(req.model)
    if req.previous_id is not None:
        history = await gateway.responses.chain(req.previous_id, _owner(key))
        if history is None:
            raise previous_not_found(req.previous_id)
        req.history = history
    call = ResponsesCall(req)
    ex = Exchange(request_id=request[REQUEST_ID], http=request, body=chat_body(req),
                  model=model, stream=req.stream, key=key,
                  key_name=key.name if key is not None else None, endpoint="responses")
    if req.stream:
        ex.egress = ResponsesEgress(call)
    # The adapter only where an attempt may go natively or must refuse: without it a
    # translated non-streaming request can be answered from the cache.
    if req.problems or _reaches_native(gateway.config, model, body):
        ex.adapter = lambda inner: ResponsesAdapter(inner, call)
    await gateway.pipeline(ex)
    if ex.response is not None:  # a stream, already sent
        if req.store and call.final is not None:
            await _store(gateway, req, call.final, key)
        return ex.response
    if call.native:
        answer = ex.response_body
        final = call.final
    else:
        final = from_chat(req, orjson.loads(ex.response_body), ex.usage)
        answer = orjson.dumps(final)
    if req.store and final is not None:
        await _store(gateway, req, final, key)
    headers = ex.gateway_headers()
    headers["content-type"] = _JSON
    return web.Response(body=answer, status=ex.status or 200, headers=headers)


async def _store(gateway: Any, req: ResponsesRequest, final: dict[str, Any], key: Any) -> None:
    """The answer is the client's whatever happens here: a store that fails is logged,
    and continuing from this response then answers previous_response_not_found."""
    response_id = final.get("id")
    if not isinstance(response_id, str) or not _ID.fullmatch(response_id):
        log.warning("a response without a storable id was not stored")
        return
    try:
        await gateway.responses.put(StoredResponse(response_id, _owner(key), req.previous_id,
                                                   final, req.items))
    except Exception:  # noqa: BLE001 — the client already has its answer
        log.exception("storing a response failed", extra={"response_id": response_id})


def _response_id(request: web.Request) -> str:
    response_id = request.match_info["response_id"]
    if not _ID.fullmatch(response_id):
        raise not_found(response_id[:128])
    return response_id


async def retrieve_response(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    response_id = _response_id(request)
    if request.query.get("stream") in ("true", "1"):
        raise bad_request("Only responses created with background=true can be streamed "
                          "again; this gateway does not run background responses.",
                          param="stream", code="unsupported_parameter")
    found = await gateway.responses.get(response_id, _owner(key))
    if found is None:
        raise not_found(response_id)
    return web.Response(body=orjson.dumps(found), headers={"content-type": _JSON})


async def delete_response(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    response_id = _response_id(request)
    if not await gateway.responses.delete(response_id, _owner(key)):
        raise not_found(response_id)
    return web.Response(body=orjson.dumps({"id": response_id, "object": "response",
                                           "deleted": True}),
                        headers={"content-type": _JSON})


async def cancel_response(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    response_id = _response_id(request)
    if await gateway.responses.get(response_id, _owner(key)) is None:
        raise not_found(response_id)
    raise bad_request("Cannot cancel a response that was not created with background=true.")


async def list_input_items(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    response_id = _response_id(request)
    query = request.query
    limit = _limit(query.get("limit"))
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                          param="order", code="invalid_value")
    items = await gateway.responses.input_items(response_id, _owner(key))
    if items is None:
        raise not_found(response_id)
    if order == "desc":
        items = items[::-1]
    ids = [item.get("id") for item in items]
    for cursor, keep in ((query.get("after"), "after"), (query.get("before"), "before")):
        if cursor:
            if cursor not in ids:
                raise bad_request(f"Invalid '{keep}': no input item with id '{cursor[:128]}' "
                                  "in this response.", param=keep, code="invalid_value")
            at = ids.index(cursor)
            items, ids = (items[at + 1:], ids[at + 1:]) if keep == "after" \
                else (items[:at], ids[:at])
    page = items[:limit]
    return web.Response(body=orjson.dumps({
        "object": "list", "data": page, "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}),
        headers={"content-type": _JSON})


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    # ASCII digits only: int() also takes ' 5', '+5', '1_0' and other scripts' digits
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= 100:
        raise bad_request(f"Invalid 'limit': expected an integer from 1 to 100, got "
                          f"'{raw[:32]}'.", param="limit", code="invalid_value")
    return limit


def add_responses_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/responses", create_response)
        app.router.add_get(f"{prefix}/responses/{{response_id}}", retrieve_response)
        app.router.add_delete(f"{prefix}/responses/{{response_id}}", delete_response)
        app.router.add_post(f"{prefix}/responses/{{response_id}}/cancel", cancel_response)
        app.router.add_get(f"{prefix}/responses/{{response_id}}/input_items",
                           list_input_items)
