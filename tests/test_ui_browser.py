"""The /ui page in a real headless Chromium (Debian's `chromium`, driven by
Playwright's Python API with the system browser): log in, watch a target go
from up to down and back as its upstream fails and recovers, watch spend move,
the keys panel with and without a key API, a wrong admin key refused.

`GATEWISE_SCREENSHOT=docs/dashboard.png` also writes the README's screenshot.
"""

from __future__ import annotations

import asyncio
import re
import os
import shutil
import textwrap
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from proxy.server.gateway import GATEWAY
from tests.fakes.faults import start_faulty_openai
from tests.fakes.openai_upstream import API_KEY
from tests.fakes.server import LoopbackServer

CHROMIUM = os.environ.get("GATEWISE_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW = ("needs Playwright and a system Chromium: apt-get install -y chromium && "
       "pip install -e '.[test]' (Playwright's own browser download is not used)")

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - the skip below says how to install it
    async_playwright = None

pytestmark = pytest.mark.skipif(async_playwright is None or not Path(CHROMIUM).exists(),
                                reason=f"browser tests skipped: {HOW}")

ADMIN = "admin-key-for-the-browser-test-0123"
CLIENT = "sk-gw-browser-0123456789abcdef"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def yaml(upstream: str) -> str:
    return textwrap.dedent(f"""
        providers:
          fake: {{type: openai, base_url: '{upstream}/v1', api_key: {API_KEY}}}
          local: {{type: mock, latency_ms: 3}}
        models:
          chat:
            slo: {{availability: 99%, latency_p95_ms: 2000, window: 5m, min_requests: 3}}
            targets:
              - {{provider: fake, model: gpt-4o-mini, price: {{input: 150, output: 600}}}}
          local:
            targets: [{{provider: local, model: echo, price: {{input: 0, output: 0}}}}]
        keys:
          - {{name: app, key: {CLIENT}, rpm: 600, budget: {{usd: 0.1, per: day}}}}
        policies:
          breaker: {{failures: 2, reset_after: 3s}}
          budgets: {{global: {{usd: 50, per: month, thresholds: [50%, 90%]}}}}
        admin: {{key: {ADMIN}}}
        """)


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def stack(tmp_path):
    servers: list = []
    fake, faults, upstream = await start_faulty_openai(servers)
    text = yaml(upstream.url) + f'state: {{ledger: "sqlite:{tmp_path}/ledger.db"}}\n'
    app = build_app(parse_config(text, {}))
    yield app, faults, servers
    for server in reversed(servers):
        await server.close()


async def start(app: web.Application, servers: list) -> LoopbackServer:
    gw = LoopbackServer(app, handler_cancellation=True)
    servers.append(gw)
    await gw.start()
    app[GATEWAY].watch.spend_every = 0.3  # (5 s in production) so the test waits less
    return gw


async def chats(gw: LoopbackServer, n: int, model: str = "chat") -> list[int]:
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(n):
            async with http.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model},
                                 headers={"authorization": f"Bearer {CLIENT}"}) as resp:
                await resp.read()
                statuses.append(resp.status)
        return statuses


async def log_in(page, gw: LoopbackServer, key: str = ADMIN) -> None:
    await page.goto(f"{gw.url}/ui")
    assert page.url.endswith("/ui/login")  # no session: the login form
    await page.fill("#key", key)
    await page.click("button[type=submit]")


async def test_login_target_down_and_up_spend_moves_keys(browser, stack, tmp_path):
    app, faults, servers = stack
    gw = await start(app, servers)
    page = await browser.new_page(viewport={"width": 1440, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await log_in(page, gw, "not-the-admin-key")
    await expect(page.locator("#message")).to_have_text("That is not the admin key.")
    assert page.url.endswith("/ui/login")
    await log_in(page, gw)
    await page.wait_for_url(f"{gw.url}/ui")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "gatewise_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert ADMIN not in await page.content()

    row = page.locator('#targets tr[data-target="fake/gpt-4o-mini"]')
    await expect(row).to_have_attribute("data-state", "up", timeout=5000)
    await expect(row.locator(".pill")).to_have_text("up")

    assert await chats(gw, 4) == [200] * 4  # spend moves
    await expect(page.locator("#sum-today")).not_to_have_text("$0", timeout=8000)
    await expect(page.locator('#spend tr[data-name="app"]')).to_be_visible()
    await expect(page.locator('.budget[data-scope^="key:app:"] .pill')).to_be_visible()

    faults.fail(None, 500)  # the upstream starts failing: the breaker opens
    assert await chats(gw, 3) == [500, 500, 503]
    await expect(row).to_have_attribute("data-state", "down", timeout=6000)
    await expect(row.locator(".pill")).to_have_text("down")
    await expect(row.locator(".reason")).to_contain_text("circuit breaker")
    await expect(page.locator('#alerts li[data-event="breaker_open"]')).to_be_visible(
        timeout=6000)
    await expect(page.locator('#slos tr[data-slo="model:chat:availability:5m"] .pill')) \
        .to_have_text("breached", timeout=6000)

    faults.clear()  # it recovers: after reset_after a probe succeeds and the breaker closes
    await asyncio.sleep(3.1)
    assert await chats(gw, 2) == [200, 200]
    await expect(row).to_have_attribute("data-state", "up", timeout=6000)
    await expect(page.locator('#alerts li[data-event="breaker_closed"]')).to_be_visible(
        timeout=6000)

    key_row = page.locator('#keys tr[data-key="app"]')  # file keys: listed, not revocable
    await expect(key_row).to_contain_text("600 rpm")
    await expect(key_row).to_contain_text("config file")
    assert await key_row.locator("button.danger").count() == 0
    # the ledger is a file, so the gateway has a key API: the page offers it
    await expect(page.locator("#key-create")).to_be_visible()

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("GATEWISE_SCREENSHOT"):
        await page.screenshot(path=os.environ["GATEWISE_SCREENSHOT"], full_page=True)
    assert errors == []


async def test_create_and_revoke_through_the_key_api(browser, stack):
    """The gateway's own key API (POST /admin/keys, DELETE /admin/keys/{name}): the page
    finds it, shows a new secret once — a key that works — and revokes it."""
    app, faults, servers = stack
    gw = await start(app, servers)
    page = await browser.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await log_in(page, gw)
    await page.wait_for_url(f"{gw.url}/ui")

    await expect(page.locator("#key-create")).to_be_visible()
    await page.fill("#key-create input[name=name]", "ci-bot")
    await page.fill("#key-create input[name=rpm]", "30")
    await page.click("#key-create button[type=submit]")
    secret_cell = page.locator("#key-secret-value")
    await expect(secret_cell).to_have_text(re.compile(r"^gw-[A-Za-z0-9_-]{43}$"))
    secret = await secret_cell.inner_text()
    await page.click("#key-secret-done")
    assert await secret_cell.inner_text() == ""  # shown once

    async def chat_as(key: str) -> int:
        async with aiohttp.ClientSession() as http, http.post(
                f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "local"},
                headers={"authorization": f"Bearer {key}"}) as resp:
            return resp.status

    assert await chat_as(secret) == 200
    row = page.locator('#keys tr[data-key="ci-bot"]')
    await expect(row).to_contain_text("30 rpm")
    await expect(page.locator('#keys tr[data-key="app"]')).to_contain_text("config file")
    await row.locator("button.danger").click()
    await expect(page.locator("#keys-note")).to_have_text("Key ci-bot revoked.")
    await expect(row).to_have_count(0)  # the listing shows live keys
    assert await chat_as(secret) == 401
    async with aiohttp.ClientSession() as http, http.get(
            f"{gw.url}/admin/audit", headers={"authorization": f"Bearer {ADMIN}"}) as resp:
        audit = (await resp.json())["data"]
    assert [(r["action"], r["key"]) for r in audit] == [("key.revoke", "ci-bot"),
                                                        ("key.create", "ci-bot")]
    assert audit[0]["admin"].startswith("admin:")  # in process, as the admin


EVIL = """<!doctype html><html><body>
<form id="f" method="post" action="{gw}/ui/logout"></form>
<script>
fetch("{gw}/ui/api/state", {{credentials: "include"}})
  .then(r => r.text()).then(t => {{ document.title = "read:" + t.slice(0, 40); }})
  .catch(() => {{ document.title = "blocked"; }});
</script>
<iframe id="frame" src="{gw}/ui"></iframe>
</body></html>"""


async def test_a_cross_site_page_gets_nothing(browser, stack):
    """Logged in at 127.0.0.1, the operator opens a hostile page on localhost (another
    site): it can neither read the page's JSON, nor frame the page, nor use the
    session to change anything."""
    app, faults, servers = stack
    gw = await start(app, servers)
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, gw)
    await page.wait_for_url(f"{gw.url}/ui")

    async def evil_page(request: web.Request) -> web.Response:
        return web.Response(text=EVIL.format(gw=gw.url), content_type="text/html")

    evil_app = web.Application()
    evil_app.router.add_get("/", evil_page)
    evil = LoopbackServer(evil_app)
    servers.append(evil)
    await evil.start()
    hostile = await context.new_page()
    await hostile.goto(f"http://localhost:{evil.port}/")
    await expect(hostile).to_have_title("blocked", timeout=5000)  # CORS: nothing to read
    frame = hostile.frame_locator("#frame")
    await hostile.wait_for_timeout(300)
    assert await frame.locator("#targets").count() == 0  # CSP frame-ancestors 'none'
    async with hostile.expect_navigation():
        await hostile.evaluate("document.getElementById('f').submit()")
    assert "ui_login_required" in await hostile.content()  # SameSite=Strict: no cookie sent
    state = await page.evaluate("fetch('/ui/api/state').then(r => r.status)")
    assert state == 200  # the operator's session is untouched
