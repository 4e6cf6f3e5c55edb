"""GET /metrics after a known sequence of requests, parsed as Prometheus would."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.server.configure import parse_config
from policies.metrics import Counter, Histogram, Metrics

KEYS = {"TEAM_KEY": "team-key-0123456789", "SLOW_KEY": "slow-key-0123456789",
        "BROKE_KEY": "broke-key-0123456789"}
CONFIG = """
    providers: {offline: {type: mock}}
    models:
      echo:
        cache: true
        targets: [{provider: offline, model: echo, price: {input: 1.0, output: 2.0}}]
      plain: {targets: [{provider: offline, model: echo}]}
    keys:
      - {name: team, key: "${TEAM_KEY}"}
      - {name: slow, key: "${SLOW_KEY}", rpm: 1}
      - {name: broke, key: "${BROKE_KEY}", budget: {usd: 0.0000001, per: day}}
"""


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} for every sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_: dict, name: str, **labels: str) -> float | None:
    return all_.get((name, tuple(sorted(labels.items()))))


async def _post(http, url, key, model, text="hello metrics", stream=False):
    async with http.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                         json={"model": model, "stream": stream,
                               "messages": [{"role": "user", "content": text}]}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("x-gatewise-cache")


async def test_metrics_after_known_sequence(start_gateway):
    gw = await start_gateway(CONFIG, env=KEYS)
    async with aiohttp.ClientSession() as http:
        team, slow, broke = KEYS["TEAM_KEY"], KEYS["SLOW_KEY"], KEYS["BROKE_KEY"]
        assert await _post(http, gw.url, team, "echo") == (200, "MISS")
        assert await _post(http, gw.url, team, "echo") == (200, "HIT")
        assert await _post(http, gw.url, team, "plain", stream=True) == (200, None)
        assert (await _post(http, gw.url, slow, "plain"))[0] == 200
        assert (await _post(http, gw.url, slow, "plain"))[0] == 429
        assert (await _post(http, gw.url, broke, "echo", text="x" * 400))[0] == 429
        async with http.get(f"{gw.url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    m = samples(text)
    req = "gatewise_requests_total"
    assert value(m, req, endpoint="chat", model="echo", target="offline/echo", status="200", error_class="") == 1
    assert value(m, req, endpoint="chat", model="echo", target="", status="200", error_class="") == 1  # the hit
    assert value(m, req, endpoint="chat", model="plain", target="offline/echo", status="200",
                 error_class="") == 2
    assert value(m, req, endpoint="chat", model="plain", target="", status="429",
                 error_class="gateway_rate_limit") == 1
    assert value(m, req, endpoint="chat", model="echo", target="", status="429",
                 error_class="budget_exceeded") == 1
    assert sum(v for (name, _), v in m.items() if name == req) == 6
    assert value(m, "gatewise_rejections_total", model="plain", reason="rate_limit") == 1
    assert value(m, "gatewise_rejections_total", model="echo", reason="budget") == 1
    assert value(m, "gatewise_cache_requests_total", model="echo", result="hit") == 1
    assert value(m, "gatewise_cache_requests_total", model="echo", result="miss") == 1
    # the miss cost what the hit saved: prompt 3+4+4=11 tokens at $1/M, "hello metrics"
    # = 4 completion tokens at $2/M
    cost = value(m, "gatewise_cost_usd_total", model="echo", target="offline/echo")
    assert cost == pytest.approx((11 * 1.0 + 4 * 2.0) / 1e6)
    assert value(m, "gatewise_cache_saved_usd_total", model="echo") == pytest.approx(cost)
    op = "gen_ai_client_operation_duration_seconds_count"
    assert value(m, op, gen_ai_operation_name="chat", gen_ai_request_model="echo",
                 error_type="") == 2
    tokens = "gen_ai_client_token_usage_sum"
    assert value(m, tokens, gen_ai_operation_name="chat", gen_ai_request_model="echo",
                 gen_ai_token_type="input") == 11  # the hit used no tokens
    assert value(m, tokens, gen_ai_operation_name="chat", gen_ai_request_model="echo",
                 gen_ai_token_type="output") == 4
    assert value(m, "gatewise_upstream_duration_seconds_count", target="offline/echo",
                 outcome="ok") == 3
    assert value(m, "gatewise_time_to_first_token_seconds_count", target="offline/echo") == 1
    assert value(m, "gatewise_overhead_seconds_count", model="plain") == 3
    assert value(m, "gatewise_breaker_state", target="offline/echo") == 0
    assert value(m, "gatewise_requests_in_flight") == 0
    inf = value(m, "gen_ai_client_operation_duration_seconds_bucket",
                gen_ai_operation_name="chat", gen_ai_request_model="plain", error_type="",
                le="+Inf")
    assert inf == 2
    for secret in KEYS.values():
        assert secret not in text
    assert "hello metrics" not in text


async def test_metrics_route_can_be_switched_off(start_gateway):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
        telemetry: {prometheus: false}
    """)
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/metrics") as resp:
        assert resp.status == 404


def test_exposition_format_and_breaker_hook():
    config = parse_config("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """, {})
    metrics = Metrics(config)
    metrics.set_breaker_state("offline/echo", "open")
    c = Counter("x_total", "help", ("a",))
    c.inc(('say "hi"\n\\',), 2)
    out: list[str] = []
    c.render(out)
    assert out[1] == 'x_total{a="say \\"hi\\"\\n\\\\"} 2.0\n'
    h = Histogram("h_seconds", "help", (), (0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 5):
        h.observe((), v)
    out = []
    h.render(out)
    parsed = samples("".join(out))
    assert [value(parsed, "h_seconds_bucket", le=le) for le in ("0.1", "1.0", "+Inf")] == [2, 3, 4]
    assert value(parsed, "h_seconds_sum") == pytest.approx(5.65)
    assert value(samples(metrics.render().decode()), "gatewise_breaker_state",
                 target="offline/echo") == 2
