"""Gemini: https image URLs, refused unless the provider's config enables fetching them,
and then fetched only from public addresses, pinned to the checked address, without
redirects, within a size cap and a timeout, as an image type Gemini accepts."""

import asyncio
import base64
import copy
import ipaddress
import socket

import openai
import pytest
from aiohttp import web

from proxy.config.types import ProviderConfig, TargetConfig
from tests.fakes.gemini_upstream import API_KEY, FakeGemini
from tests.fakes.server import LoopbackServer
from translators.gemini import GeminiTranslator
from translators.image_fetch import FetchPolicy, fetch_image, is_public

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # 520 bytes
PART = "messages[0].content[1].image_url.url"


class ImageServer:
    """Serves images (and misbehaviours) on loopback; records every request path."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/{name}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(name)
        if name == "cat.png":
            return web.Response(body=PNG_BYTES, content_type="image/png")
        if name == "cat.jpg":
            return web.Response(body=b"\xff\xd8\xffjpeg", content_type="image/jpg")
        if name == "big.png":
            return web.Response(body=b"x" * 2000, content_type="image/png")
        if name == "big-chunked.png":
            resp = web.StreamResponse(headers={"content-type": "image/png"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(20):
                await resp.write(b"y" * 100)
            await resp.write_eof()
            return resp
        if name == "redirect.png":
            raise web.HTTPFound("/cat.png")
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "cat.gif":
            return web.Response(body=b"GIF89a", content_type="image/gif")
        if name == "slow.png":
            await self.release.wait()
            return web.Response(body=PNG_BYTES, content_type="image/png")
        return web.Response(status=404)


@pytest.fixture
async def images():
    server = ImageServer()
    async with LoopbackServer(server.app) as running:
        server.url = running.url
        server.port = running.port
        yield server
        server.release.set()


@pytest.fixture
async def fake():
    fake = FakeGemini()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def client(fake, start_gateway):
    gw = await start_gateway(f"""
        providers:
          closed: {{type: gemini, base_url: "{fake.url}", api_key: {API_KEY}}}
          open:
            type: gemini
            base_url: "{fake.url}"
            api_key: {API_KEY}
            fetch_image_urls: true
            image_max_bytes: 1000
            image_fetch_timeout: 0.3
        models:
          closed: {{targets: [{{provider: closed, model: gemini-2.5-flash}}]}}
          open: {{targets: [{{provider: open, model: gemini-2.5-flash}}]}}
    """)
    yield openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The test hook: let fetches reach the loopback image server over http."""
    monkeypatch.setattr(GeminiTranslator, "image_address_check",
                        staticmethod(lambda address: address.is_loopback))
    monkeypatch.setattr(GeminiTranslator, "image_schemes", ("https", "http"))


def _messages(url):
    return [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]


async def _refused(client, model, url):
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model=model, messages=_messages(url))
    assert err.value.status_code == 400
    assert err.value.body["param"] == PART
    assert err.value.body["code"] == "invalid_image_url"
    return err.value.body["message"]


# --- off (the default) ---------------------------------------------------------------

async def test_fetching_off_is_a_400_naming_the_part(fake, client, images):
    message = await _refused(client, "closed", f"https://127.0.0.1:{images.port}/cat.png")
    assert "not enabled" in message
    assert images.seen == [] and fake.requests == []


# --- on: the security rules with the production address check ------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_image_server_is_refused_as_not_public(fake, client, images, host):
    message = await _refused(client, "open", f"https://{host}:{images.port}/cat.png")
    assert "not a public address" in message
    assert images.seen == [] and fake.requests == []


async def test_http_urls_are_refused(fake, client, images):
    message = await _refused(client, "open", f"http://127.0.0.1:{images.port}/cat.png")
    assert "only https" in message
    assert images.seen == [] and fake.requests == []


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False),
    ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("255.255.255.255", False), ("240.0.0.1", False), ("::1", False),
    ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("2002:a00:1::1", False), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False)])
def test_address_table(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


# --- on: the positive path and each refusal, through the test hook ---------------------

async def test_fetched_image_is_inlined_as_base64(fake, client, images, loopback_allowed):
    messages = _messages(f"{images.url}/cat.png")
    sent = copy.deepcopy(messages)
    reply = await client.chat.completions.create(model="open", messages=messages)
    assert reply.choices[0].message.content
    parts = fake.last["contents"][0]["parts"]
    assert parts == [{"text": "What is this?"}, {"inlineData": {
        "mimeType": "image/png", "data": base64.b64encode(PNG_BYTES).decode()}}]
    assert images.seen == ["cat.png"] and messages == sent


async def test_image_jpg_is_sent_as_image_jpeg(fake, client, images, loopback_allowed):
    await client.chat.completions.create(model="open", messages=_messages(f"{images.url}/cat.jpg"))
    assert fake.last["contents"][0]["parts"][1]["inlineData"] == {
        "mimeType": "image/jpeg", "data": base64.b64encode(b"\xff\xd8\xffjpeg").decode()}


async def test_streaming_request_inlines_too(fake, client, images, loopback_allowed):
    stream = await client.chat.completions.create(
        model="open", stream=True, messages=_messages(f"{images.url}/cat.png"))
    assert [c async for c in stream]
    assert fake.last["contents"][0]["parts"][1]["inlineData"]["data"] == \
        base64.b64encode(PNG_BYTES).decode()


@pytest.mark.parametrize("name,why", [
    ("big.png", "larger than 1000 bytes"), ("big-chunked.png", "larger than 1000 bytes"),
    ("redirect.png", "redirects are not followed"), ("page.html", "'text/html'"),
    ("cat.gif", "'image/gif'"), ("missing.png", "HTTP 404"),
    ("slow.png", "within 0.3s")])
async def test_refusals_are_400s_naming_the_part(fake, client, images, loopback_allowed,
                                                 name, why):
    message = await _refused(client, "open", f"{images.url}/{name}")
    assert why in message
    assert images.seen == [name]  # a redirect is never followed to cat.png
    assert fake.requests == []


# --- the fetch itself ----------------------------------------------------------------

async def test_one_dns_lookup_and_the_connection_goes_to_the_checked_address(
        images, monkeypatch):
    """DNS rebinding: a second lookup would answer an inside address; there is none."""
    loop = asyncio.get_running_loop()
    answers = ["127.0.0.1", "10.9.9.9"]
    calls = []

    async def rebinding_getaddrinfo(host, port, **kwargs):
        calls.append(host)
        address = answers[min(len(calls), 2) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding_getaddrinfo)
    checked = []
    policy = FetchPolicy(max_bytes=10_000, timeout=2,
                         allow_address=lambda a: checked.append(str(a)) or a.is_loopback,
                         schemes=("http",))
    image = await fetch_image(f"http://images.test:{images.port}/cat.png", "p", policy)
    assert (image.media_type, image.data) == ("image/png", PNG_BYTES)
    assert calls == ["images.test"] and checked == ["127.0.0.1"]
    assert images.seen == ["cat.png"]


def _provider(**options):
    return ProviderConfig(name="g", type="gemini", base_url="https://x.test", api_key="k",
                          options={"fetch_image_urls": True, **options})


async def test_prepare_does_not_mutate_the_body_and_request_inlines(images, loopback_allowed):
    chat = {"model": "m", "messages": _messages(f"{images.url}/cat.png")}
    before = copy.deepcopy(chat)
    translator = GeminiTranslator(_provider())
    await translator.prepare(chat)
    target = TargetConfig(provider="g", model="gemini-2.5-flash")
    request = translator.request(chat, target, stream=False)
    assert chat == before
    assert base64.b64encode(PNG_BYTES) in request.body
