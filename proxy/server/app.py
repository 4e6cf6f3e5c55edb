"""Building the aiohttp application: routes, the one middleware, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable

from aiohttp import web

from policies.accesslog import AccessLog
from proxy.config.types import GatewayConfig
from proxy.server.admin import add_admin_routes
from proxy.server.admin_keys import add_key_routes
from proxy.core.errors import GatewayError
from proxy.core.ids import uuid4_hex
from proxy.server.gateway import EXCHANGE, GATEWAY, REQUEST_ID, Gateway
from proxy.server.live import Live
from proxy.server.reload import Loader, Reloader
from proxy.server.reload_admin import (add_reload_routes, file_loader, listen_for_reloads,
                                       reload_checks, start_watching)
from proxy.server.chat import add_routes
from proxy.server.anthropic_api import anthropic_error_response, speaks_anthropic
from proxy.server.completions import add_completions_routes
from proxy.server.embeddings import add_embeddings_routes
from proxy.server.messages import add_messages_routes
from proxy.server.models import add_model_routes
from proxy.server.responses import add_responses_routes
from proxy.server.ui import Ui, add_ui_routes

log = logging.getLogger("gatewise")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id")
    if given and _SAFE_REQUEST_ID.fullmatch(given):
        return given
    return "req_" + uuid4_hex()


def _error_response(request: web.Request, error: GatewayError) -> web.Response:
    if speaks_anthropic(request):  # /v1/messages: Anthropic's envelope and statuses
        return anthropic_error_response(request, error)
    headers = {"content-type": "application/json", **error.headers}
    return web.Response(status=error.status, body=error.body(), headers=headers)


def _http_error(request: web.Request, exc: web.HTTPException, max_body: int) -> GatewayError:
    where = f"{request.method} {request.path}"
    if exc.status == 404:
        return GatewayError(404, f"Invalid URL ({where})", "invalid_request_error")
    if exc.status == 405:
        allowed = exc.headers.get("allow", "")
        return GatewayError(405, f"Invalid method for URL ({where})", "invalid_request_error",
                            headers={"allow": allowed} if allowed else None)
    if exc.status == 413:
        return GatewayError(413, f"Request body too large: the gateway accepts at most "
                                 f"{max_body} bytes (server.max_body_mb).",
                            "invalid_request_error", code="request_too_large")
    return GatewayError(exc.status, exc.reason or "HTTP error", "invalid_request_error")


_ENDPOINTS = {"/chat/completions": "chat", "/completions": "completions",
              "/embeddings": "embeddings", "/responses": "responses", "/messages": "messages",
              "/models": "models", "/models/{model}": "models", "/metrics": "metrics"}
#: never refused for load: a probe, a scrape or an operator must get in when it is busiest
_ALWAYS = frozenset({"health", "metrics", "admin"})
#: the admin routes and /metrics on their own listener, when `server.admin_port` is set
ADMIN_APP = web.AppKey("admin_app", web.Application)


def endpoint_of(request: web.Request) -> str:
    """A bounded label for the API a request called ("unknown": no such route)."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unknown"
    path = resource.canonical
    if path.startswith(("/admin", "/ui")):
        return "admin"  # the admin API and the operator's page
    if path.startswith("/health"):
        return "health"
    path = path.removeprefix("/v1")
    endpoint = _ENDPOINTS.get(path)
    if endpoint is None:  # e.g. /v1/responses/{id}, /v1/messages/count_tokens
        endpoint = _ENDPOINTS.get("/" + path.split("/")[1], "other") if path != "/" else "other"
    return endpoint


def overloaded(limit: int) -> GatewayError:
    return GatewayError(503, f"The gateway is serving its limit of {limit} requests at once "
                             "(server.max_in_flight); retry shortly.", "server_error",
                        code="server_overloaded",
                        headers={"retry-after": "1", "x-should-retry": "true"})


def _middleware(live: Live, max_body: int):
    metrics, access = live.metrics, live.access_log  # (the same for every generation)
    endpoints: dict = {}  # each route's resource (None: no route): its endpoint label

    @web.middleware
    async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter_ns()
        rid = request[REQUEST_ID] = _request_id(request)
        resource = request.match_info.route.resource
        endpoint = endpoints.get(resource)
        if endpoint is None:
            endpoint = endpoints[resource] = endpoint_of(request)
        counted = endpoint not in _ALWAYS
        error: GatewayError | None = None
        response: web.StreamResponse | None = None
        gateway, pin = live.enter()  # this request's config, whatever reloads come
        try:
            if counted:
                limit = gateway.config.server.max_in_flight
                if live.in_flight >= limit:  # refused at once, never queued
                    counted = False
                    error = overloaded(limit)
                    response = _error_response(request, error)
                    return response
                gateway.in_flight += 1
            response = await handler(request)
            return response
        except GatewayError as err:
            error = err
            response = _error_response(request, err)
            return response
        except web.HTTPException as exc:
            error = _http_error(request, exc, max_body)
            response = _error_response(request, error)
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid})
            error = GatewayError(500, f"The gateway hit an internal error (request id {rid}).",
                                 "server_error", code="gateway_internal_error")
            response = _error_response(request, error)
            return response
        finally:
            if counted:
                gateway.in_flight -= 1
            live.leave(gateway, pin)
            if EXCHANGE not in request:  # the pipeline's policies did not see it: say it here
                status = response.status if response is not None else 499
                metrics.outside(endpoint, status, error, started)
                access.outside(rid, endpoint, request.method, status, error, started)

    return gateway_middleware


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers["x-request-id"] = rid


def build_app(config: GatewayConfig, now: Callable[[], float] | None = None,
              load: Loader | None = None, watch: bool = False) -> web.Application:
    """`now` replaces the wall clock for budget periods (tests roll days over); `load`
    reads the config again for a reload (by default the file it came from); `watch`
    reloads when that file or a secret file it names changes."""
    max_body = config.server.max_body_bytes
    gateway = Gateway(config, policies=[AccessLog()], **({"now": now} if now else {}))
    live = Live(gateway)
    live.reloader = Reloader(live, load if load is not None else file_loader(config),
                             checks=reload_checks(live))
    app = web.Application(client_max_size=max_body, middlewares=[_middleware(live, max_body)])
    app[GATEWAY] = live  # type: ignore[assignment] — reads as the request's Gateway
    listen_for_reloads(live)
    app.cleanup_ctx.append(live.lifespan)
    if watch:
        app.on_startup.append(lambda _app: start_watching(live))
    app.on_response_prepare.append(_stamp_request_id)
    add_routes(app)
    add_completions_routes(app)
    add_embeddings_routes(app)
    add_messages_routes(app)
    add_model_routes(app)
    add_responses_routes(app)
    if config.server.admin_port is None:
        _add_operator_routes(app, gateway)
    else:  # a listener of their own (loopback by default): the client port may be public
        admin = web.Application(middlewares=[_middleware(live, max_body)])
        admin[GATEWAY] = live  # type: ignore[assignment]
        admin.on_response_prepare.append(_stamp_request_id)
        _add_operator_routes(admin, gateway)
        app[ADMIN_APP] = admin
    return app


def _add_operator_routes(app: web.Application, gateway: Gateway) -> None:
    """What an operator uses: the admin API, the dashboard, /metrics."""
    add_admin_routes(app)
    add_key_routes(app, key_api=gateway.keyring is not None)
    add_reload_routes(app)
    if gateway.ui_enabled:
        add_ui_routes(app, Ui(gateway.config.admin_key, gateway.sessions))
    if gateway.config.telemetry.prometheus:
        app.router.add_get("/metrics", _metrics)


async def _metrics(request: web.Request) -> web.Response:
    """GET /metrics: this process's series, or under --workers the sum over all."""
    gateway = request.app[GATEWAY]
    if gateway.peers is not None:
        return await gateway.peers.handle(request)
    return await gateway.metrics.handle(request)
