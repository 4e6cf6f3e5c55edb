"""GET /v1/models (the configured models a key may use) and the health probes."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.core.errors import model_not_found
from proxy.server import anthropic_models
from proxy.server.gateway import GATEWAY

_JSON = "application/json"


async def list_models(request: web.Request) -> web.Response:
    if "anthropic-version" in request.headers:  # an Anthropic SDK: its shape
        return await anthropic_models.list_models(request)
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    if key is None or not key.models:
        return web.Response(body=gateway.models_body, content_type=_JSON)
    data = [e for name, e in gateway.model_entries.items() if key.allows(name)]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)


async def retrieve_model(request: web.Request) -> web.Response:
    if "anthropic-version" in request.headers:
        return await anthropic_models.retrieve_model(request)
    gateway = request.app[GATEWAY]
    key = gateway.authenticate(request.headers)
    name = request.match_info["model"]
    entry = gateway.model_entries.get(name)
    if entry is None or (key is not None and not key.allows(name)):
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


def add_model_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
