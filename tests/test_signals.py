"""Signals that tell the truth: overhead, refused requests, endpoints, breaker gauge."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.server.gateway import GATEWAY
from tests.fakes.openai_upstream import API_KEY, Reply

CLIENT_KEY = "client-key-0123456789"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def access_lines(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if r.name == "gatewise.access"]


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[tuple, float]:
    async with http.get(url + "/metrics") as resp:
        return samples(await resp.text())


async def test_overhead_excludes_the_wait_for_upstream_chunks(fake, start_gateway, caplog):
    caplog.set_level(logging.INFO, logger="gatewise.access")
    fake.default = Reply(text="one two three four five six", chunk_delay=0.1)
    gw = await start_gateway(f"""
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
    """)
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}) \
                as resp:
            header = float(resp.headers["x-gatewise-overhead-ms"])
            await resp.read()
        await asyncio.sleep(0.05)
        metrics = await scrape(http, gw.url)
    line = next(f for f in access_lines(caplog) if f["endpoint"] == "chat")
    assert line["latency_ms"] > 500  # the upstream took its time...
    assert line["overhead_ms"] < 100  # ...and it is not counted as the gateway's
    assert header < 100
    overhead = metrics[("gatewise_overhead_seconds_sum", (("model", "m"),))]
    assert overhead < 0.1


async def test_refused_requests_are_logged_and_counted_by_endpoint(fake, start_gateway,
                                                                  caplog):
    caplog.set_level(logging.INFO, logger="gatewise.access")
    gw = await start_gateway(f"""
        server: {{max_body_mb: 0.01}}
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
        keys: [{{name: app, key: "{CLIENT_KEY}"}}]
    """)
    good = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with aiohttp.ClientSession() as http:
        calls = [
            ("/v1/chat/completions", {"authorization": "Bearer wrong-key-000000000"}, CHAT, 401),
            ("/v1/embeddings", {}, {"model": "m", "input": "x"}, 401),
            ("/v1/chat/completions", good, {"model": "m"}, 400),
            ("/v1/completions", good, {"model": "m", "prompt": "x" * 20_000}, 413),
            ("/v1/nowhere", good, CHAT, 404),
            ("/v1/embeddings", good, {"model": "m", "input": "hello"}, 200),
            ("/v1/completions", good, {"model": "m", "prompt": "hello"}, 200),
        ]
        for path, headers, body, status in calls:
            async with http.post(gw.url + path, headers=headers, json=body) as resp:
                assert resp.status == status, (path, await resp.text())
        async with http.get(gw.url + "/v1/models", headers=good) as resp:
            assert resp.status == 200
        metrics = await scrape(http, gw.url)
    lines = access_lines(caplog)
    seen = [(f["endpoint"], f["status"]) for f in lines]
    assert seen == [("chat", 401), ("embeddings", 401), ("chat", 400), ("completions", 413),
                    ("unknown", 404), ("embeddings", 200), ("completions", 200),
                    ("models", 200), ("metrics", 200)]
    assert lines[0]["error_code"] == "invalid_api_key"

    def count(endpoint: str, status: str, error: str, model: str = "",
              target: str = "") -> float | None:
        return metrics.get(("gatewise_requests_total", tuple(sorted({
            "endpoint": endpoint, "model": model, "target": target, "status": status,
            "error_class": error}.items()))))

    assert count("chat", "401", "invalid_api_key") == 1
    assert count("embeddings", "401", "invalid_api_key") == 1
    assert count("completions", "413", "request_too_large") == 1
    assert count("unknown", "404", "invalid_request_error") == 1
    assert count("embeddings", "200", "", "m", "up/gpt-4o") == 1
    assert count("completions", "200", "", "m", "up/gpt-4o") == 1
    ops = {dict(labels)["gen_ai_operation_name"] for (name, labels) in metrics
           if name == "gen_ai_client_operation_duration_seconds_count"}
    assert ops == {"chat", "embeddings", "text_completion"}


async def test_breaker_gauge_follows_every_transition(fake, start_gateway):
    gw = await start_gateway(f"""
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
        policies: {{breaker: {{failures: 1, reset_after: 0.3s}}}}
    """)
    gauge = ("gatewise_breaker_state", (("target", "up/gpt-4o"),))
    async with aiohttp.ClientSession() as http:
        assert (await scrape(http, gw.url))[gauge] == 0
        fake.script(Reply(status=500))
        async with http.post(gw.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 500
        assert gw.app[GATEWAY].dispatcher.breakers.state("up/gpt-4o") == "open"
        assert (await scrape(http, gw.url))[gauge] == 2  # /admin/targets and /metrics agree
        await asyncio.sleep(0.35)
        assert (await scrape(http, gw.url))[gauge] == 1  # probes may go now
        async with http.post(gw.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200
        assert (await scrape(http, gw.url))[gauge] == 0
