"""The page's guards, attacked without a browser: no session, a wrong key, brute
force, cross-site posts, missing or stolen CSRF tokens, forged cookies, path
tricks; and that the admin key never leaves the server."""

from __future__ import annotations

import re
import uuid

import aiohttp
import pytest
from yarl import URL

from proxy.server.gateway import GATEWAY
from tests.test_redis_stores import REDIS_URL, require

ADMIN = "admin-key-ui-security-0123456"
CLIENT = "sk-gw-uisec-0123456789abcdef"
BASE = f"""
providers:
  offline: {{type: mock}}
models:
  echo: {{targets: [{{provider: offline, model: echo}}]}}
keys: [{{name: app, key: {CLIENT}}}]
"""


def gateway(admin: str | None = ADMIN, extra: str = "") -> str:
    return BASE + (f"admin: {{key: {admin}{extra}}}\n" if admin else "")


def jar() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, url: str, key: str = ADMIN,
                origin: str | None = "same") -> aiohttp.ClientResponse:
    headers = {} if origin is None else {"origin": url if origin == "same" else origin}
    async with http.post(f"{url}/ui/login", data={"key": key}, headers=headers,
                         allow_redirects=False) as resp:
        await resp.read()
        return resp


async def csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/ui/api/session") as resp:
        assert resp.status == 200
        return (await resp.json())["csrf"]


async def test_without_a_session_nothing_opens(start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as http:
        async with http.get(f"{gw.url}/ui", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["location"] == "/ui/login"
        for path in ("/ui/api/state", "/ui/api/session", "/ui/api/keys"):
            async with http.get(f"{gw.url}{path}") as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "ui_login_required"
        http.cookie_jar.update_cookies({"gatewise_ui": "forged-" + "x" * 40})
        async with http.get(f"{gw.url}/ui/api/state") as resp:
            assert resp.status == 401
        # the admin key as a bearer opens the admin API, not the page
        async with http.get(f"{gw.url}/ui/api/state",
                            headers={"authorization": f"Bearer {ADMIN}"}) as resp:
            assert resp.status == 401


async def test_login_sets_a_strict_httponly_cookie_and_the_key_stays_on_the_server(
        start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as http:
        resp = await login(http, gw.url)
        assert resp.status == 303 and resp.headers["location"] == "/ui"
        cookie = resp.headers["set-cookie"]
        assert re.search(r"gatewise_ui=[A-Za-z0-9_\-]{43};", cookie)
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        seen = []
        for path in ("/ui", "/ui/api/session", "/ui/api/state", "/ui/api/keys",
                     "/ui/static/app.js"):
            async with http.get(f"{gw.url}{path}") as resp:
                assert resp.status == 200, path
                seen.append(await resp.read())
                assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
                assert resp.headers["x-content-type-options"] == "nosniff"
        for body in seen:
            assert ADMIN.encode() not in body and CLIENT.encode() not in body
        keys = __import__("json").loads(seen[3])
        assert keys["data"][0]["name"] == "app" and keys["data"][0]["source"] == "file"
        async with http.get(f"{gw.url}/ui/api/state",
                            headers={"if-none-match": gw.app[GATEWAY].watch.etag}) as resp:
            assert resp.status == 304


async def test_a_wrong_key_is_refused_and_guessing_is_throttled(start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as http:
        resp = await login(http, gw.url, key="admin-key-ui-security-012345X")
        assert resp.status == 401 and "set-cookie" not in resp.headers
        for _ in range(9):
            assert (await login(http, gw.url, key="guess")).status == 401
        resp = await login(http, gw.url, key="guess")
        assert resp.status == 429 and int(resp.headers["retry-after"]) > 200
        assert (await login(http, gw.url)).status == 429  # even the right key, for a while
        async with http.post(f"{gw.url}/ui/login", data={}, headers={"origin": gw.url}) as r:
            assert r.status == 429


async def test_cross_site_posts_are_refused(start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as http:
        assert (await login(http, gw.url, origin="https://evil.example")).status == 403
        assert (await login(http, gw.url, origin=None)).status == 403  # no Origin at all
        async with http.post(f"{gw.url}/ui/login", data={"key": ADMIN},
                             headers={"sec-fetch-site": "cross-site"},
                             allow_redirects=False) as resp:
            assert resp.status == 403
        async with http.post(f"{gw.url}/ui/login", data={"key": ADMIN},
                             headers={"sec-fetch-site": "same-origin"},
                             allow_redirects=False) as resp:
            assert resp.status == 303  # (a browser that sends no Origin but says so)
        token = await csrf(http, gw.url)
        for headers in ({}, {"origin": gw.url}, {"origin": gw.url, "x-csrf-token": "0" * 43},
                        {"origin": "https://evil.example", "x-csrf-token": token},
                        {"x-csrf-token": token, "sec-fetch-site": "same-site"}):
            async with http.post(f"{gw.url}/ui/logout", headers=headers) as resp:
                assert resp.status == 403, headers
                assert (await resp.json())["error"]["code"] == "ui_csrf"
            async with http.post(f"{gw.url}/ui/api/keys", json={"name": "x"},
                                 headers=headers) as resp:
                assert resp.status == 403
            async with http.delete(f"{gw.url}/ui/api/keys/app", headers=headers) as resp:
                assert resp.status == 403
        ok = {"origin": gw.url, "x-csrf-token": token}
        async with http.post(f"{gw.url}/ui/api/keys", json={"name": "x"}, headers=ok) as resp:
            assert resp.status == 404  # guards passed; this gateway has no key API
            assert (await resp.json())["error"]["code"] == "key_api_missing"
        async with http.post(f"{gw.url}/ui/logout", headers=ok) as resp:
            assert resp.status == 200
        async with http.get(f"{gw.url}/ui/api/state") as resp:
            assert resp.status == 401  # the session is gone on the server too


async def test_a_token_from_another_session_does_not_work(start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as mine, jar() as theirs:
        await login(mine, gw.url)
        await login(theirs, gw.url)
        their_token = await csrf(theirs, gw.url)
        async with mine.post(f"{gw.url}/ui/logout",
                             headers={"origin": gw.url, "x-csrf-token": their_token}) as resp:
            assert resp.status == 403


async def test_static_files_are_a_fixed_list(start_gateway):
    gw = await start_gateway(gateway())
    async with jar() as http:
        for name in ("..%2Fui.py", "index.html", "..%2F..%2Fgateway.py", "app.js%00", "x"):
            async with http.get(f"{gw.url}/ui/static/{name}") as resp:
                assert resp.status == 404, name
        async with http.get(f"{gw.url}/ui/static/style.css") as resp:
            assert resp.status == 200 and resp.content_type == "text/css"


@pytest.mark.parametrize("admin,extra", [(None, ""), (ADMIN, ", ui: false")])
async def test_no_admin_key_or_ui_false_serves_no_page(start_gateway, admin, extra):
    gw = await start_gateway(gateway(admin, extra))
    async with jar() as http:
        for path in ("/ui", "/ui/login", "/ui/api/state"):
            async with http.get(f"{gw.url}{path}", allow_redirects=False) as resp:
                assert resp.status == 404
        assert (await login(http, gw.url)).status == 404


async def test_sessions_in_redis_work_on_every_instance(start_gateway):
    require("127.0.0.1", 6379, "Redis")
    prefix = f"gwui{uuid.uuid4().hex[:8]}:"
    state = f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
    a = await start_gateway(gateway() + state)
    b = await start_gateway(gateway() + state)
    async with jar() as http:
        await login(http, a.url)
        cookie = http.cookie_jar.filter_cookies(URL(f"{a.url}/ui/"))["gatewise_ui"].value
    async with jar() as other:
        other.cookie_jar.update_cookies({"gatewise_ui": cookie})
        async with other.get(f"{b.url}/ui/api/state") as resp:
            assert resp.status == 200
        token = await csrf(other, b.url)
        async with other.post(f"{b.url}/ui/logout",
                              headers={"origin": b.url, "x-csrf-token": token}) as resp:
            assert resp.status == 200
        async with other.get(f"{a.url}/ui/api/state") as resp:
            assert resp.status == 401  # logged out on one, gone on both
    redis = a.app[GATEWAY].shared.redis
    keys = await redis.client.keys(redis.prefix + "*")
    assert cookie.encode() not in b"".join(keys)  # only the hash is kept
    if keys:
        await redis.client.delete(*keys)


async def test_sessions_that_cannot_be_read_say_so(start_gateway, caplog):
    gw = await start_gateway(gateway())
    async with jar() as http:
        await login(http, gw.url)

        async def down(sid):
            raise ConnectionError("redis: connection refused")

        gw.app[GATEWAY].sessions.get = down
        async with http.get(f"{gw.url}/ui/api/state") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "ui_sessions_unavailable"
    assert "sessions cannot be read" in caplog.text and "Traceback" not in caplog.text
