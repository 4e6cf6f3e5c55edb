"""`/ui`: the operator's page, behind the admin key.

The admin key is typed once into a login form (POSTed, never in a URL) and
exchanged for a server-side session: an HttpOnly, SameSite=Strict cookie
holding a random id. The page never sees the admin key. Every state-changing
call needs the session's CSRF token in `x-csrf-token` and an `Origin` (or
`Sec-Fetch-Site`) that says same origin; a strict Content-Security-Policy
allows only the page's own files. The page's JSON is built once a second by
proxy/server/watch.py, so a view costs the gateway a dictionary read.

Client keys are listed through `GET /admin/keys`; creating and revoking them
goes through the key API (`POST /admin/keys`, `DELETE /admin/keys/{name}`)
when the gateway has it, called in process with the admin key, so the page
can do what the API can and nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from importlib import resources
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy import __version__
from proxy.core.errors import GatewayError
from proxy.server.gateway import GATEWAY, REQUEST_ID

log = logging.getLogger("gatewise.ui")
COOKIE = "gatewise_ui"
_STATIC = {"app.js": "text/javascript", "charts.js": "text/javascript",
           "style.css": "text/css", "favicon.svg": "image/svg+xml"}
_PAGES = ("index.html", "login.html")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY", "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin", "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin", "cross-origin-resource-policy": "same-origin",
}
FAILURES_ALLOWED, FAILURE_WINDOW_S = 10, 300.0


def _load(name: str) -> bytes:
    return resources.files("proxy.server").joinpath("ui_static", name).read_bytes()


class Ui:
    def __init__(self, admin_key: str, sessions: Any,
                 clock: Callable[[], float] = time.time) -> None:
        self._digest = hashlib.sha256(admin_key.encode()).digest()
        self.sessions = sessions
        self.clock = clock
        self.files = {name: _load(name) for name in (*_STATIC, *_PAGES)}
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, since)

    # --- guards --------------------------------------------------------------------------

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """The browser says this request comes from this page: Origin matches the host
        it was sent to, or (no Origin) Sec-Fetch-Site is same-origin."""
        origin = request.headers.get("origin")
        if origin is not None:
            return origin == f"{request.scheme}://{request.host}"
        return request.headers.get("sec-fetch-site") == "same-origin"

    async def session(self, request: web.Request) -> Any:
        sid = request.cookies.get(COOKIE)
        if not sid or len(sid) > 128:
            return None
        try:
            return await self.sessions.get(sid)
        except Exception as exc:  # noqa: BLE001 — e.g. Redis away: say so, no traceback
            log.warning(f"ui: sessions cannot be read: {exc!r}")
            raise GatewayError(503, "The page's sessions are unavailable (the shared state "
                                    "does not answer); try again shortly.", "server_error",
                               code="ui_sessions_unavailable") from None

    async def require(self, request: web.Request, changes: bool = False) -> Any:
        """The caller's session, or 401; with `changes`, also its CSRF token and origin."""
        session = await self.session(request)
        if session is None:
            raise GatewayError(401, "Not logged in to the gatewise page (or the session "
                                    "expired): log in at /ui/login.", code="ui_login_required")
        if changes:
            token = request.headers.get("x-csrf-token", "")
            if not self.same_origin(request) or not hmac.compare_digest(
                    token.encode(), session.csrf.encode()):
                raise GatewayError(403, "This request did not come from the gatewise page "
                                        "(missing or wrong CSRF token or origin).",
                                   code="ui_csrf")
        return session

    def _throttled(self, address: str) -> float:
        count, since = self._failures.get(address, (0, 0.0))
        left = since + FAILURE_WINDOW_S - self.clock()
        return left if count >= FAILURES_ALLOWED and left > 0 else 0.0

    def _failed(self, address: str) -> None:
        now = self.clock()
        count, since = self._failures.get(address, (0, now))
        if now - since > FAILURE_WINDOW_S:
            count, since = 0, now
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures[address] = (count + 1, since)

    # --- pages ---------------------------------------------------------------------------

    def _file(self, name: str, content_type: str, status: int = 200,
              replace: dict[str, str] | None = None) -> web.Response:
        body = self.files[name]
        for marker, text in (replace or {}).items():
            body = body.replace(marker.encode(), _escape(text).encode())
        return web.Response(body=body, status=status, content_type=content_type,
                            charset="utf-8" if content_type.startswith("text") else None,
                            headers=SECURITY_HEADERS)

    async def index(self, request: web.Request) -> web.StreamResponse:
        if await self.session(request) is None:
            return _redirect("/ui/login")
        return self._file("index.html", "text/html")

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if await self.session(request) is not None:
            return _redirect("/ui")
        return self._file("login.html", "text/html", replace={"{{message}}": ""})

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "?"

        def refuse(status: int, message: str) -> web.Response:
            return self._file("login.html", "text/html", status, {"{{message}}": message})

        if not self.same_origin(request):
            return refuse(403, "This form must be sent from the gatewise page itself.")
        wait = self._throttled(address)
        if wait:
            response = refuse(429, f"Too many wrong keys: try again in {wait:.0f} s.")
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        form = await request.post() if request.content_type in (
            "application/x-www-form-urlencoded", "multipart/form-data") else {}
        key = form.get("key")
        given = hashlib.sha256(key.encode()).digest() if isinstance(key, str) else b""
        if not hmac.compare_digest(given, self._digest):
            self._failed(address)
            log.warning(f"ui: a wrong admin key was tried from {address}")
            return refuse(401, "That is not the admin key.")
        self._failures.pop(address, None)
        sid, _ = await self.sessions.create()
        response = _redirect("/ui")
        response.set_cookie(COOKIE, sid, path="/ui", httponly=True, samesite="Strict",
                            secure=request.secure)
        log.info(f"ui: logged in from {address}")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.require(request, changes=True)
        await self.sessions.drop(request.cookies[COOKIE])
        response = web.json_response({"ok": True}, headers=SECURITY_HEADERS)
        response.del_cookie(COOKIE, path="/ui")
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:  # a fixed list: no path ever reaches the file system
            raise web.HTTPNotFound()
        response = self._file(name, _STATIC[name])
        response.headers["cache-control"] = "no-cache"
        return response

    # --- the page's JSON -----------------------------------------------------------------

    async def api_session(self, request: web.Request) -> web.Response:
        session = await self.require(request)
        gateway = request.app[GATEWAY]
        return web.json_response({"csrf": session.csrf, "version": __version__,
                                  "gateway": gateway.alerts.gateway,
                                  "key_api": key_api(request.app)}, headers=SECURITY_HEADERS)

    async def api_state(self, request: web.Request) -> web.Response:
        await self.require(request)
        watch = request.app[GATEWAY].watch
        watch.touch()
        if request.headers.get("if-none-match") == watch.etag:
            return web.Response(status=304, headers={**SECURITY_HEADERS, "etag": watch.etag})
        return web.Response(body=watch.body, content_type="application/json",
                            headers={**SECURITY_HEADERS, "etag": watch.etag})

    async def api_keys(self, request: web.Request) -> web.StreamResponse:
        """The key listing; each key the config file holds is marked `source: file`
        (the page offers no revoke for those: they change in the file)."""
        await self.require(request)
        response = await _forward(request, "GET", "/admin/keys")
        body = getattr(response, "body", None)
        if response.status == 200 and isinstance(body, bytes):
            listing = orjson.loads(body)
            in_file = {k.name for k in request.app[GATEWAY].config.keys}
            for entry in listing.get("data", []):
                if isinstance(entry, dict) and "source" not in entry:
                    entry["source"] = "file" if entry.get("name") in in_file else "api"
            response.body = orjson.dumps(listing)
        return response

    async def api_create_key(self, request: web.Request) -> web.StreamResponse:
        await self.require(request, changes=True)
        if not key_api(request.app)["create"]:
            raise GatewayError(404, "This gateway has no key API: client keys are set in its "
                                    "config file.", code="key_api_missing")
        return await _forward(request, "POST", "/admin/keys")

    async def api_revoke_key(self, request: web.Request) -> web.StreamResponse:
        await self.require(request, changes=True)
        name = request.match_info["name"]
        path = key_api(request.app)["revoke_path"]
        if path is None:
            raise GatewayError(404, "This gateway has no key API: client keys are set in its "
                                    "config file.", code="key_api_missing")
        if not _KEY_NAME.fullmatch(name):
            raise GatewayError(400, "Invalid key name.", code="invalid_key_name")
        return await _forward(request, "DELETE", path.replace("{}", name))


def _redirect(location: str) -> web.Response:
    """A 303 returned, not raised: the gateway's middleware answers raised HTTP errors
    in OpenAI's envelope."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "location": location})


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def key_api(app: web.Application) -> dict[str, Any]:
    """Whether the gateway serves the key API: POST /admin/keys, and DELETE on one
    key (its path with "{}" where the name goes)."""
    create, revoke = False, None
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "POST" and canonical == "/admin/keys":
            create = True
        match = re.fullmatch(r"/admin/keys/\{[A-Za-z_]+\}", canonical)
        if route.method == "DELETE" and match:
            revoke = "/admin/keys/{}"
    return {"create": create, "revoke": revoke is not None, "revoke_path": revoke}


async def _forward(request: web.Request, method: str, path: str) -> web.StreamResponse:
    """Run the gateway's own admin route for this path in process, as the admin."""
    gateway = request.app[GATEWAY]
    headers = CIMultiDict((k, v) for k, v in request.headers.items()
                          if k.lower() not in ("cookie", "authorization", "x-csrf-token"))
    headers["authorization"] = f"Bearer {gateway.config.admin_key}"
    sub = request.clone(method=method, rel_url=path, headers=headers)
    sub[REQUEST_ID] = request[REQUEST_ID]
    match = await request.app.router.resolve(sub)
    if match.http_exception is not None:
        raise GatewayError(404, f"The gateway does not serve {method} {path}.",
                           code="key_api_missing")
    match.add_app(request.app)
    match.freeze()
    sub._match_info = match  # what aiohttp's own dispatch sets before a handler runs
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = match.handler
    response = await handler(sub)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def add_ui_routes(app: web.Application, ui: Ui) -> None:
    app.router.add_get("/ui", ui.index)
    app.router.add_get("/ui/", ui.index)
    app.router.add_get("/ui/login", ui.login_page)
    app.router.add_post("/ui/login", ui.login)
    app.router.add_post("/ui/logout", ui.logout)
    app.router.add_get("/ui/static/{name}", ui.static)
    app.router.add_get("/ui/api/session", ui.api_session)
    app.router.add_get("/ui/api/state", ui.api_state)
    app.router.add_get("/ui/api/keys", ui.api_keys)
    app.router.add_post("/ui/api/keys", ui.api_create_key)
    app.router.add_delete("/ui/api/keys/{name}", ui.api_revoke_key)
