"""What every endpoint handler does around the pipeline: read and check the request,
make its Exchange, and answer the client once the pipeline has run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.core.errors import model_not_found
from proxy.core.exchange import Exchange
from proxy.server.gateway import REQUEST_ID, Gateway
from proxy.server.requests import check_forbidden, check_known, check_model, read_json


async def read_checked(gateway: Gateway, request: web.Request,
                       known: frozenset[str]) -> tuple[Any, dict[str, Any]]:
    """The caller's key (401 before anything else) and the body, read once: no field that
    would choose an upstream or credential, none the endpoint does not know, a model."""
    key = gateway.authenticate(request.headers)
    body = await read_json(request)
    check_forbidden(body)
    check_model(body)
    check_known(body, known)
    return key, body


def exchange_for(gateway: Gateway, request: web.Request, body: dict[str, Any], *, stream: bool,
                 key: Any, adapter: Callable[[Any], Any] | None = None,
                 endpoint: str = "chat") -> Exchange:
    """The Exchange of a checked request; 404 for a model the config does not name.
    `adapter` picks each attempt's translator when the endpoint is not plain chat."""
    model = gateway.config.models.get(body["model"])
    if model is None:
        raise model_not_found(body["model"])
    return Exchange(request_id=request[REQUEST_ID], http=request, body=body, model=model,
                    stream=stream, key=key, key_name=key.name if key is not None else None,
                    adapter=adapter, endpoint=endpoint)


def answer(ex: Exchange) -> web.StreamResponse:
    """The stream the pipeline already sent, or its JSON answer with the gateway's headers."""
    if ex.response is not None:
        return ex.response
    headers = ex.gateway_headers()
    headers["content-type"] = "application/json"
    return web.Response(body=ex.response_body, status=ex.status or 200, headers=headers)
