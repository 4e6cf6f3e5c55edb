"""The admin API for client keys, and its audit log. The admin key alone opens it.

    GET    /admin/keys                  every key: the file's and the API's (revoked
                                        ones with ?include_revoked=true)
    POST   /admin/keys                  make one → 201, its secret in `key`, shown once
    GET    /admin/keys/{name}           one key
    PATCH  /admin/keys/{name}           change its settings (null removes one)
    DELETE /admin/keys/{name}           revoke it (refused within a second everywhere)
    POST   /admin/keys/{name}/rotate    a new secret; the old one works for `grace_seconds`
    GET    /admin/audit                 admin actions, newest first

Everything but the listing exists only when the key API does (a ledger in a
SQLite file or on PostgreSQL): the dashboard finds the routes. Shapes:
docs/operations.md.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.core.errors import GatewayError, bad_request
from proxy.server.gateway import GATEWAY
from proxy.server.key_views import api_key_view, file_key_view, with_spend
from proxy.server.keyring import Actor, FileKey, KeyProblems
from proxy.state.api_keys import KeyConflict, KeyNotFound, KeyStoreDown


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _admin(request: web.Request) -> tuple[Any, Actor]:
    gateway = request.app[GATEWAY]
    gateway.admin_auth.check(request.headers)
    return gateway, Actor(gateway.admin_auth.id or "admin", request.remote or "unknown")


#: a key's settings fit in far less; more is a mistake or an attack
MAX_BODY = 65536


async def _body(request: web.Request, required: bool = True) -> Any:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise GatewayError(413, f"A key's settings take at most {MAX_BODY} bytes.",
                           code="request_too_large")
    if not raw.strip():
        if required:
            raise bad_request("The request body is empty; send a JSON object.")
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None


def _file_names(gateway: Any) -> set[str]:
    return {k.name for k in gateway.config.keys}


async def list_keys(request: web.Request) -> web.Response:
    """GET /admin/keys[?include_revoked=true]"""
    gateway, _ = _admin(request)
    revoked = request.query.get("include_revoked", "false")
    if revoked not in ("true", "false"):
        raise bad_request("Invalid 'include_revoked': expected true or false.",
                          param="include_revoked")
    data = [file_key_view(k) for k in gateway.config.keys]
    keyring = gateway.keyring
    if keyring is not None:
        data += [api_key_view(r) for r in await _guard(keyring.store.all())
                 if revoked == "true" or r.revoked_at is None]
    await with_spend(gateway, data)
    return _json({"object": "list", "data": data,
                  "key_api": {"enabled": keyring is not None}})


async def create_key(request: web.Request) -> web.Response:
    gateway, actor = _admin(request)
    record, secret = await _guard(gateway.keyring.create(await _body(request),
                                                         _file_names(gateway), actor))
    return _json({**api_key_view(record), "key": secret}, 201)


async def get_key(request: web.Request) -> web.Response:
    gateway, _ = _admin(request)
    name = request.match_info["name"]
    found = next((k for k in gateway.config.keys if k.name == name), None)
    view = file_key_view(found) if found is not None else None
    if view is None:
        record = await _guard(gateway.keyring.store.get(name))
        if record is None:
            raise _not_found(name)
        view = api_key_view(record)
    await with_spend(gateway, [view])
    return _json(view)


async def update_key(request: web.Request) -> web.Response:
    gateway, actor = _admin(request)
    record = await _guard(gateway.keyring.update(request.match_info["name"],
                                                 await _body(request), _file_names(gateway),
                                                 actor))
    return _json(api_key_view(record))


async def revoke_key(request: web.Request) -> web.Response:
    gateway, actor = _admin(request)
    record = await _guard(gateway.keyring.revoke(request.match_info["name"],
                                                 _file_names(gateway), actor))
    return _json(api_key_view(record))


async def rotate_key(request: web.Request) -> web.Response:
    gateway, actor = _admin(request)
    record, secret = await _guard(gateway.keyring.rotate(
        request.match_info["name"], await _body(request, required=False),
        _file_names(gateway), actor))
    return _json({**api_key_view(record), "key": secret})


async def audit(request: web.Request) -> web.Response:
    """GET /admin/audit?limit=100&before=ID&key=NAME"""
    gateway, _ = _admin(request)
    query = request.query
    limit = _integer(query.get("limit", "100"), "limit", 1, 1000)
    before = _integer(query["before"], "before", 1, 2**62) if "before" in query else None
    rows = await _guard(gateway.keyring.store.audit_rows(limit, before, query.get("key")))
    return _json({"object": "list", "data": rows,
                  "next_before": rows[-1]["id"] if len(rows) == limit else None})


def _integer(raw: str, name: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad_request(f"Invalid '{name}': expected an integer from {low} to {high}.",
                          param=name)
    return int(raw)


async def _guard(awaitable: Any) -> Any:
    """The key API's outcomes as HTTP answers."""
    try:
        return await awaitable
    except KeyProblems as err:
        first = err.problems[0].split(":", 1)[0] if err.problems else None
        raise bad_request("Invalid key: " + "; ".join(err.problems), param=first or None,
                          code="invalid_key") from None
    except KeyConflict as err:
        raise GatewayError(409, str(err), code="key_exists") from None
    except FileKey as err:
        raise GatewayError(409, f"The key '{err}' is in the config file: change it there and "
                                "reload.", code="file_key") from None
    except KeyNotFound as err:
        raise _not_found(str(err)) from None
    except KeyStoreDown as err:
        raise GatewayError(503, f"The key database is unavailable; nothing was changed "
                                f"({err}).", "server_error", code="key_store_unavailable",
                           headers={"retry-after": "1"}) from None


def _not_found(name: str) -> GatewayError:
    return GatewayError(404, f"No live key named '{name}'.", code="key_not_found")


def add_key_routes(app: web.Application, key_api: bool) -> None:
    app.router.add_get("/admin/keys", list_keys)
    if not key_api:
        return
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys/{name}", get_key)
    app.router.add_patch("/admin/keys/{name}", update_key)
    app.router.add_delete("/admin/keys/{name}", revoke_key)
    app.router.add_post("/admin/keys/{name}/rotate", rotate_key)
    app.router.add_get("/admin/audit", audit)
