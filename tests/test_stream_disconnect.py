"""Streams that end badly: the client leaves, the upstream stalls or drops."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_upstream import API_KEY, Reply
from tests.fakes.server import LoopbackServer

USER = [{"role": "user", "content": "Tell me a long story"}]
LONG = " ".join(f"word{i}" for i in range(200))


@pytest.fixture
async def gw(fake, start_gateway):
    return await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: "${{FAKE_KEY}}"}}
        models:
          gpt-4o: {{targets: [{{provider: up, model: gpt-4o}}]}}
        policies:
          timeouts: {{first_token: 0.3s, idle: 0.4s, total: 0.5s}}
          retry: {{attempts: 0}}  # one attempt: these tests look at its failure
    """, env={"FAKE_KEY": API_KEY})


def stream_body(**extra) -> dict:
    return {"model": "gpt-4o", "messages": USER, "stream": True, **extra}


def events(raw: bytes) -> list[bytes]:
    return [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]


async def test_client_disconnect_closes_upstream_at_once(gw, fake):
    # The upstream goes quiet after word2: only gatewise closing the upstream
    # connection can tell the fake that the client left.
    fake.script(Reply(text=LONG, pauses={4: 5.0}))
    loop = asyncio.get_running_loop()
    http = aiohttp.ClientSession()
    try:
        resp = await http.post(f"{gw.url}/v1/chat/completions", json=stream_body())
        assert resp.status == 200
        seen = b""
        while b"word2" not in seen:  # the stream is flowing, chunk by chunk
            seen += await resp.content.readany()
        resp.close()  # drop the connection mid-stream
        left_at = loop.time()
    finally:
        await http.close()
    closed_at = await fake.wait_disconnect(timeout=1.0)
    assert closed_at - left_at < 1.0
    assert len(fake.disconnects) == 1


async def test_client_disconnect_during_first_token_wait(gw, fake):
    """Before anything was streamed the client gives up: the upstream is closed too."""
    fake.script(Reply(text="late", stall=0.25))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(f"{gw.url}/v1/chat/completions", json=stream_body())
        left_at = loop.time()
    closed_at = await fake.wait_disconnect(timeout=1.0)
    assert closed_at - left_at < 1.0


async def test_stall_before_first_token_is_504(gw, fake):
    fake.script(Reply(text="too late", stall=1.5))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            raw = await resp.read()
            assert resp.status == 504
            assert resp.headers["content-type"].startswith("application/json")
            assert resp.headers["x-request-id"]
    error = orjson.loads(raw)["error"]
    assert error["code"] == "upstream_timeout" and error["type"] == "server_error"
    assert "first token" in error["message"]
    await fake.wait_disconnect(timeout=1.0)  # the abandoned upstream request was closed


async def test_stall_before_first_token_via_sdk(gw, fake):
    fake.script(Reply(text="too late", stall=1.5))
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    assert info.value.status_code == 504


async def test_upstream_drop_mid_stream_ends_with_error_event(gw, fake):
    fake.script(Reply(text="one two three four five", drop_after=3))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            assert resp.status == 200
            raw = await resp.read()
    got = events(raw)
    assert b"[DONE]" not in got
    chunks = [orjson.loads(e) for e in got]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) \
        == "one two "
    error = chunks[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and error["code"] == "upstream_bad_response"


async def test_upstream_drop_mid_stream_raises_in_sdk(gw, fake):
    fake.script(Reply(text="one two three four five", drop_after=3))
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=USER,
                                                      stream=True)
        text = ""
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
    assert text == "one two "


async def test_idle_upstream_mid_stream_ends_with_timeout_event(gw, fake):
    fake.script(Reply(text="one two three", pauses={3: 2.0}))  # silent after "one two "
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            assert resp.status == 200
            raw = await resp.read()
    got = events(raw)
    assert b"[DONE]" not in got
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in got[:-1]] == [
        "", "one ", "two "]
    error = orjson.loads(got[-1])["error"]
    assert error["code"] == "upstream_timeout" and "idle" in error["message"]
    await fake.wait_disconnect(timeout=1.0)


async def test_upstream_drop_before_content_is_an_http_error(gw, fake):
    """Nothing reached the client yet, so it gets a clean error status, not a broken stream."""
    fake.script(Reply(text="one two", drop_after=1))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            raw = await resp.read()
            assert resp.status == 502
    assert orjson.loads(raw)["error"]["code"] == "upstream_bad_response"


ERROR_EVENT = (b'data: {"error": {"message": "The server had an error while processing your '
               b'request.", "type": "server_error", "param": null, "code": null}}\n\n')


@pytest.mark.parametrize("pauses", [{}, {2: 0.1}], ids=["one-read", "after-commit"])
async def test_upstream_error_event_mid_stream_is_forwarded(gw, fake, pauses):
    """Regression: content that arrived in the same read as the error event was lost
    (before the commit: a bare 500 instead of the stream; after it: missing chunks)."""
    fake.script(Reply(text="one two three", inject={3: ERROR_EVENT}, drop_after=3,
                      pauses=pauses))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            assert resp.status == 200
            raw = await resp.read()
    got = events(raw)
    assert b"[DONE]" not in got
    error = orjson.loads(got[-1])["error"]
    assert error["message"].startswith("The server had an error")
    assert error["type"] == "server_error"
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in got[:-1]] == [
        "", "one ", "two "]


async def test_upstream_error_event_before_content_is_an_http_error(gw, fake):
    """Regression: OpenAI's in-stream rate-limit error (type "requests", code
    "rate_limit_exceeded") was classified as a server error and answered 500."""
    rate = (b'data: {"error": {"message": "Rate limit reached", "type": "requests", '
            b'"param": null, "code": "rate_limit_exceeded"}}\n\n')
    fake.script(Reply(text="never", inject={1: rate}, drop_after=1))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            raw = await resp.read()
            assert resp.status == 429
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"


async def test_streaming_upstream_error_status_before_stream(gw, fake):
    fake.script(Reply(status=429, headers={"retry-after": "3"}, body={
        "message": "Rate limit reached", "type": "requests", "param": None,
        "code": "rate_limit_exceeded"}))
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    assert info.value.response.headers["retry-after"] == "3"


async def test_non_streaming_total_timeout_is_504(gw, fake):
    fake.script(Reply(text="late", stall=1.5))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions",
                             json={"model": "gpt-4o", "messages": USER}) as resp:
            raw = await resp.read()
            assert resp.status == 504
    error = orjson.loads(raw)["error"]
    assert error["code"] == "upstream_timeout" and "total" in error["message"]
    await fake.wait_disconnect(timeout=1.0)


async def test_client_disconnect_during_non_streaming_call(gw, fake):
    fake.script(Reply(text="late", stall=0.4))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(f"{gw.url}/v1/chat/completions",
                                json={"model": "gpt-4o", "messages": USER})
        left_at = loop.time()
    closed_at = await fake.wait_disconnect(timeout=1.0)
    assert closed_at - left_at < 1.0


async def test_body_stalled_after_headers_is_a_504_timeout(start_gateway):
    # A total timeout while reading the body is a timeout (504), not a 502
    # "connection failed": both in proxy/engine/transport.py and under the request deadline.
    async def headers_then_stall(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        resp = aiohttp.web.StreamResponse(headers={"content-type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"id":')
        await asyncio.sleep(3)
        return resp

    app = aiohttp.web.Application()
    app.router.add_post("/v1/chat/completions", headers_then_stall)
    async with LoopbackServer(app) as upstream:
        gw = await start_gateway(f"""
            providers: {{up: {{type: openai, base_url: "{upstream.url}/v1"}}}}
            models: {{m: {{targets: [{{provider: up, model: m}}]}}}}
            policies:
              timeouts: {{total: 0.3s}}
              retry: {{attempts: 0}}
        """)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "m", "messages": USER}) as resp:
                assert resp.status == 504
                error = (await resp.json())["error"]
    assert error["code"] == "upstream_timeout"


async def test_gateway_fault_mid_stream_ends_the_stream_cleanly(gw, fake, monkeypatch):
    # Regression: an exception of the gateway's own after the stream was committed
    # left the client's connection hanging (the middleware tried to answer a second
    # response); it now ends the stream with an error event and no [DONE].
    from translators.openai import OpenAITranslator

    real = OpenAITranslator.stream
    seen = {"n": 0}

    def flaky(self, event):
        seen["n"] += 1
        if seen["n"] == 4:
            raise RuntimeError("a bug")
        return real(self, event)

    monkeypatch.setattr(OpenAITranslator, "stream", flaky)
    monkeypatch.setattr(OpenAITranslator, "passthrough", lambda self, block: None)
    fake.script(Reply(text="one two three four five", chunk_delay=0.01))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=stream_body()) as resp:
            assert resp.status == 200
            raw = await resp.read()
    last = events(raw)[-1]
    assert b"[DONE]" not in raw
    assert orjson.loads(last)["error"]["code"] == "gateway_internal_error"
