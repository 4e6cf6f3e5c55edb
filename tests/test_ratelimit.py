"""Client rate limits (rpm, tpm, concurrency) and per-target upstream limits."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from policies.ratelimit import go_duration
from proxy.state.stores import MemoryRateStore

KEY = "sk-gw-limited-0123456789abcdef"
ADMIN = "sk-gw-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 50}


def config(limits: str, latency_ms: int = 0, targets: str = "[{provider: offline, model: echo}]",
           extra: str = "") -> str:
    return f"""
admin: {{key: {ADMIN}}}
providers:
  offline: {{type: mock, latency_ms: {latency_ms}}}
models:
  echo: {{targets: {targets}}}
keys:
  - {{name: app, key: {KEY}, {limits}}}
{extra}"""


async def post(http, url, json=CHAT, headers=AUTH):
    async with http.post(f"{url}/v1/chat/completions", json=json, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


def test_reset_durations_look_like_openai():
    assert go_duration(0.02) == "20ms"
    assert go_duration(1) == "1s"
    assert go_duration(7.66) == "7.66s"
    assert go_duration(360) == "6m0s"


async def test_memory_rate_store_takes_refuses_and_reconciles():
    store = MemoryRateStore()
    ok, window = store.take("t", 100, 60)
    assert ok and window.remaining == 40
    ok, window = store.take("t", 100, 50)
    assert not ok and 5.9 < window.retry_after_s < 6.1  # 10 tokens at 100/60s per second
    store.adjust("t", 100, -50)  # the call used 10, not 60
    ok, window = store.take("t", 100, 50)
    assert ok and window.remaining <= 40
    assert store.take("t", 100, 101)[0] is False  # can never fit


async def test_rpm_limit_answers_429_at_once_with_openai_headers(start_gateway):
    gw = await start_gateway(config("rpm: 2"))
    async with aiohttp.ClientSession() as http:
        status, _, headers = await post(http, gw.url)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "1"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert (await post(http, gw.url))[0] == 200
        status, body, headers = await post(http, gw.url)
    assert status == 429
    assert body["error"]["code"] == "gateway_rate_limit"
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 30
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert "x-should-retry" not in headers  # waiting helps here


async def test_tpm_too_large_outright_is_not_retryable(start_gateway):
    gw = await start_gateway(config("tpm: 100"))
    async with aiohttp.ClientSession() as http:
        status, body, headers = await post(http, gw.url, json={**CHAT, "max_tokens": 500})
        assert status == 429
        assert headers["x-should-retry"] == "false" and "retry-after" not in headers
        assert body["error"]["code"] == "gateway_rate_limit"
        assert headers["x-ratelimit-limit-tokens"] == "100"
        status, _, headers = await post(http, gw.url)  # 50 + prompt fits
        assert status == 200 and headers["x-ratelimit-limit-tokens"] == "100"


async def test_tpm_is_reconciled_with_real_usage(start_gateway):
    gw = await start_gateway(config("tpm: 1000"))
    async with aiohttp.ClientSession() as http:
        status, body, headers = await post(http, gw.url, json={**CHAT, "max_tokens": 500})
        assert status == 200
        # taken at the estimate: about 9 prompt + 500 output
        assert int(headers["x-ratelimit-remaining-tokens"]) < 500
        used = body["usage"]["total_tokens"]
        async with http.get(f"{gw.url}/admin/keys",
                            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            usage = (await resp.json())["data"][0]["usage"]
    # after the call only the real usage counts against the window
    assert 1000 - used - 1 <= usage["tokens_remaining"] <= 1000
    # a second large request fits again; without reconciliation it would not
    async with aiohttp.ClientSession() as http:
        assert (await post(http, gw.url, json={**CHAT, "max_tokens": 500}))[0] == 200


async def test_tpm_window_full_is_429_with_token_headers(start_gateway):
    gw = await start_gateway(config("tpm: 1000", latency_ms=300))
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(post(http, gw.url, json={**CHAT, "max_tokens": 400})
                                         for _ in range(3)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 429]
    _, _, headers = next(r for r in results if r[0] == 429)
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 400
    assert int(headers["retry-after"]) >= 1 and "x-should-retry" not in headers


async def test_max_concurrent(start_gateway):
    gw = await start_gateway(config("max_concurrent: 1", latency_ms=200))
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(post(http, gw.url), post(http, gw.url))
        assert sorted(r[0] for r in results) == [200, 429]
        _, body, headers = next(r for r in results if r[0] == 429)
        assert body["error"]["code"] == "gateway_rate_limit" and headers["retry-after"] == "1"
        assert (await post(http, gw.url))[0] == 200  # released after the first finished


async def test_openai_sdk_gets_rate_limit_error(start_gateway):
    gw = await start_gateway(config("rpm: 1"))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    await client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(**CHAT)
    assert info.value.code == "gateway_rate_limit"
    await client.close()


TWO_TARGETS = "[{provider: offline, model: echo, rpm: 1}, {provider: spare, model: echo}]"


async def test_target_without_room_is_skipped_then_429(start_gateway):
    text = f"""
providers:
  offline: {{type: mock}}
  spare: {{type: mock}}
models:
  echo: {{targets: {TWO_TARGETS}}}
  solo: {{targets: [{{provider: offline, model: echo, rpm: 1}}]}}
"""
    gw = await start_gateway(text)
    async with aiohttp.ClientSession() as http:
        _, _, first = await post(http, gw.url, headers={})
        _, _, second = await post(http, gw.url, headers={})
        assert first["x-gatewise-target"] == "offline/echo"
        assert second["x-gatewise-target"] == "spare/echo"  # skipped, not waited on
        status, body, headers = await post(http, gw.url, json={**CHAT, "model": "solo"},
                                           headers={})
    # offline/echo's one request a minute is spent (shared by both models)
    assert status == 429 and body["error"]["code"] == "upstream_rate_limit"
    assert int(headers["retry-after"]) >= 1
