"""Fallback chains, retries and deadlines, end to end against faulty fake upstreams."""

from __future__ import annotations

import logging
import time

import aiohttp
import openai
import orjson
import pytest

from proxy.engine.plan import RequestPlan, RetryBudget, backoff
from proxy.server.configure import ConfigError, parse_config
from proxy.config.routing import RetryConfig
from tests.fakes.faults import Fault, start_faulty_openai
from tests.fakes.openai_upstream import API_KEY

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
async def ups():
    """`await ups(n)` → n (fake, faults, server) upstreams on loopback."""
    stack: list = []

    async def make(n: int):
        return [await start_faulty_openai(stack) for _ in range(n)]

    yield make
    for server in stack:
        await server.close()


def providers(upstreams, **timeouts) -> str:
    lines = ["providers:"]
    for i, (_, _, server) in enumerate(upstreams, 1):
        extra = "".join(f", {k}: {v}" for k, v in timeouts.items())
        lines.append(f"  u{i}: {{type: openai, base_url: '{server.url}/v1', "
                     f"api_key: {API_KEY}, timeouts: {{connect: 1s{extra}}}}}")
    return "\n".join(lines) + "\n"


async def post(gw, body, **kw):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json=body, **kw) as resp:
            return resp.status, resp.headers, await resp.read()


# --- fallback chains ---------------------------------------------------------------

async def test_next_target_then_fallback_model(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2), (f3, x3, s3) = await ups(3)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2), (f3, x3, s3)]) + """
models:
  main:
    targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]
    fallbacks: [backup]
  backup: {targets: [{provider: u3, model: gpt-4o-mini}]}
""")
    x1.fail(1, 500)
    x2.fail(1, 503)
    status, headers, body = await post(gw, {"model": "main", **CHAT})
    assert status == 200, body
    assert headers["x-gatewise-attempts"] == "3"
    assert headers["x-gatewise-fallback"] == "backup"
    assert headers["x-gatewise-target"] == "u3/gpt-4o-mini"
    assert f3.requests[-1].body["model"] == "gpt-4o-mini"
    # healthy again: the first target serves, no fallback header
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert status == 200 and headers["x-gatewise-attempts"] == "1"
    assert "x-gatewise-fallback" not in headers


async def test_sdk_end_to_end_fallback_and_request_fallbacks(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2), (f3, x3, s3) = await ups(3)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2), (f3, x3, s3)]) + """
models:
  main: {targets: [{provider: u1, model: gpt-4o}], fallbacks: [b, c]}
  b: {targets: [{provider: u2, model: gpt-4o}]}
  c: {targets: [{provider: u3, model: gpt-4o}]}
""")
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    x1.fail(1, 500)
    # extra_body.fallbacks reorders: c before b; it is stripped before going upstream
    raw = await client.chat.completions.with_raw_response.create(
        model="main", extra_body={"fallbacks": ["c"]}, **CHAT)
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert raw.headers["x-gatewise-fallback"] == "c"
    assert not f2.requests
    assert x1.seen["/v1/chat/completions"] == 1
    assert "fallbacks" not in f3.requests[-1].body
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="main", extra_body={"fallbacks": ["nope"]},
                                             **CHAT)
    assert info.value.body["param"] == "fallbacks"
    await client.close()


async def test_context_window_fallback(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2), (f3, x3, s3) = await ups(3)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2), (f3, x3, s3)]) + """
models:
  main:
    targets: [{provider: u1, model: gpt-4o}]
    fallbacks: [other]
    context_window_fallbacks: [big]
  other: {targets: [{provider: u2, model: gpt-4o}]}
  big: {targets: [{provider: u3, model: gpt-4.1}]}
""")
    overflow = {"error": {"message": "This model's maximum context length is 128000 tokens.",
                          "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}
    x1.fail(1, 400, body=overflow)
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert status == 200
    assert headers["x-gatewise-fallback"] == "big" and headers["x-gatewise-attempts"] == "2"
    assert not f2.requests  # the ordinary fallback is not used for an overflow
    # a prompt the gateway knows is too big never reaches the small target at all
    huge = {"model": "main", "messages": [{"role": "user", "content": "x" * 600_000}]}
    before = len(f1.requests)
    status, headers, _ = await post(gw, huge)
    assert status == 200 and headers["x-gatewise-target"] == "u3/gpt-4.1"
    assert len(f1.requests) == before and headers["x-gatewise-attempts"] == "1"


async def test_capability_filter_end_to_end(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models:
  main:
    targets:
      - {provider: u1, model: deepseek-reasoner}
      - {provider: u2, model: gpt-4o}
  weak: {targets: [{provider: u1, model: deepseek-reasoner}]}
""")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    status, headers, _ = await post(gw, {"model": "main", "tools": tools, **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    assert not f1.requests
    status, _, body = await post(gw, {"model": "weak", "tools": tools, **CHAT})
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "unsupported_capability"


# --- what is retried, and how ------------------------------------------------------

@pytest.mark.parametrize("status,code", [(400, None)])
async def test_bad_request_is_never_retried(ups, start_gateway, status, code):
    """(A refused credential fails over instead: tests/test_failover.py.)"""
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models:
  main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}],
         fallbacks: [other]}
  other: {targets: [{provider: u2, model: gpt-4o-mini}]}
policies: {retry: {attempts: 3, backoff: 10ms}}
""")
    x1.fail(None, status)
    got, headers, body = await post(gw, {"model": "main", **CHAT})
    assert got == (400 if status == 400 else 502)
    assert orjson.loads(body)["error"]["code"] == code
    assert len(f1.requests) + x1.log.count(status) == 1  # exactly one upstream call
    assert not f2.requests and x2.seen.total() == 0


async def test_retry_after_honoured_in_place_when_no_alternative(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 2, backoff: 1ms, retry_after_cap: 2s}}
""")
    x1.fail(1, 429, headers={"retry-after-ms": "300"})
    started = time.monotonic()
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    elapsed = time.monotonic() - started
    assert status == 200 and headers["x-gatewise-attempts"] == "2"
    assert elapsed >= 0.3  # it waited as the upstream asked


async def test_retry_after_above_the_cap_is_not_waited_for(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 2, backoff: 1ms, retry_after_cap: 200ms}}
""")
    x1.fail(1, 429, headers={"retry-after": "30"})
    started = time.monotonic()
    status, headers, body = await post(gw, {"model": "main", **CHAT})
    assert time.monotonic() - started < 5
    assert status == 429 and headers["retry-after"] == "30"
    assert headers["x-gatewise-attempts"] == "1"
    assert orjson.loads(body)["error"]["type"] == "rate_limit_exceeded"


async def test_rate_limited_target_is_left_for_another_first(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}}
policies: {retry: {attempts: 2, retry_after_cap: 10s}}
""")
    x1.fail(1, 429, headers={"retry-after": "5"})
    started = time.monotonic()
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    assert time.monotonic() - started < 2  # no sleeping while u2 was ready
    # and the next request starts with u2 while u1 cools down
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert headers["x-gatewise-target"] == "u2/gpt-4o" and headers["x-gatewise-attempts"] == "1"


async def test_server_errors_retry_with_backoff(ups, start_gateway, caplog):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 2, backoff: 20ms, max_backoff: 50ms}}
""")
    x1.fail(2, 502)
    with caplog.at_level(logging.INFO, logger="gatewise.attempt"):
        status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert status == 200 and headers["x-gatewise-attempts"] == "3"
    lines = [r for r in caplog.records if r.name == "gatewise.attempt"]
    assert [r.fields["error_class"] for r in lines] == ["server", "server", None]
    assert [r.fields["attempt"] for r in lines] == [1, 2, 3]


async def test_deadline_covers_all_attempts(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 50, backoff: 100ms, max_backoff: 100ms, deadline: 400ms}}
""")
    x1.add(Fault(status=500, stall=0.15, times=None))
    started = time.monotonic()
    status, headers, body = await post(gw, {"model": "main", **CHAT})
    elapsed = time.monotonic() - started
    assert status in (500, 504)
    assert elapsed < 1.0
    assert 2 <= int(headers["x-gatewise-attempts"]) <= 3
    # a single slow attempt is cut at the deadline too
    x1.clear()
    x1.stall(2.0)
    started = time.monotonic()
    status, _, body = await post(gw, {"model": "main", **CHAT})
    assert status == 504 and time.monotonic() - started < 1.0
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"


# --- streams -----------------------------------------------------------------------

async def test_first_token_timeout_falls_back_in_a_stream(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)], first_token="200ms") + """
models: {main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}}
""")
    x1.stall(1.0)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="main", stream=True, **CHAT)
    assert raw.headers["x-gatewise-target"] == "u2/gpt-4o"
    assert raw.headers["x-gatewise-attempts"] == "2"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "Hello! How can I help you today?"
    await client.close()


async def test_drop_before_content_falls_back_cleanly(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}}
""")
    x1.drop_after(1)  # only the role chunk, then the connection is cut
    status, headers, raw = await post(gw, {"model": "main", "stream": True, **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    roles = [e for e in events if b'"role":"assistant"' in e]
    assert len(roles) == 1  # one clean stream: nothing from u1


async def test_mid_stream_failure_shape(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}}
""")
    x1.drop_after(3)  # role, then two content chunks, then the cut
    status, headers, raw = await post(gw, {"model": "main", "stream": True, **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u1/gpt-4o"
    events = [e for e in raw.split(b"\n\n") if e]
    assert b"[DONE]" not in raw
    last = orjson.loads(events[-1][len(b"data: "):])
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["code"] == "upstream_bad_response"
    assert not f2.requests  # no fallback once the client has content


# --- units -------------------------------------------------------------------------

def test_retry_budget_caps_retries_at_a_share_of_requests():
    now = [0.0]
    budget = RetryBudget(RetryConfig(budget_ratio=0.1, budget_min_retries=2,
                                     budget_window=10), clock=lambda: now[0])
    for _ in range(50):
        budget.request()
    granted = sum(budget.acquire() for _ in range(20))
    assert granted == 5  # 10% of 50
    now[0] = 11.0  # the window has slid past: only the floor is left
    assert [budget.acquire() for _ in range(3)] == [True, True, False]


async def test_retry_budget_stops_a_retry_storm(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + """
models: {main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}}
policies:
  retry: {budget: {ratio: 0, min_retries: 2, window: 60s}}
  breaker: {enabled: false}
""")
    x1.fail(None, 500)
    results = [await post(gw, {"model": "main", **CHAT}) for _ in range(5)]
    assert [r[0] for r in results] == [200, 200, 500, 500, 500]
    assert len(f2.requests) == 2  # only two failovers were allowed


def test_backoff_grows_with_jitter_and_cap():
    config = RetryConfig(backoff=0.1, max_backoff=0.5)
    import random
    rng = random.Random(3)
    for n, ceiling in enumerate((0.1, 0.2, 0.4, 0.5, 0.5)):
        value = backoff(config, n, rng)
        assert ceiling / 2 <= value <= ceiling


def test_plan_never_waits_past_the_deadline():
    now = [0.0]
    plan = RequestPlan(RetryConfig(attempts=5), [], lambda m, p: [], {}, lambda: now[0],
                       deadline=1.0)
    from proxy.engine.plan import Candidate
    plan.later(Candidate(model=None, target=None, tries=1), 2.0)  # type: ignore[arg-type]
    assert plan.next() is None


def test_config_problems_name_the_field():
    with pytest.raises(ConfigError) as info:
        parse_config("""
providers: {p: {type: mock, health_check: {interval: soon, bogus: 1}}}
models:
  m: {targets: [{provider: p, model: echo}], strategy: {name: adaptive, weights: {speed: 1}}}
policies:
  retry: {attempts: -1, backoff: fast}
  breaker: {failures: 0, half_open: 2}
""", {})
    problems = "\n".join(info.value.problems)
    for expected in ("providers.p.health_check.interval", "providers.p.health_check.bogus",
                     "models.m.strategy.weights.speed", "policies.retry.attempts",
                     "policies.retry.backoff", "policies.breaker.failures",
                     "policies.breaker.half_open"):
        assert expected in problems, problems


def test_config_parses_routing():
    config = parse_config("""
providers: {p: {type: mock, health_check: true}}
models:
  m: {targets: [{provider: p, model: echo}],
      strategy: {name: adaptive, weights: {success: 3, latency: 0.5}}}
policies:
  retry: {attempts: 2, backoff: 250ms, max_backoff: 8s, retry_after_cap: 30s, deadline: 2m,
          budget: {ratio: 0.5, min_retries: 3, window: 30s}}
  breaker: {failures: 3, reset_after: 10s, half_open_probes: 2}
""", {})
    r = config.routing
    assert config.models["m"].strategy == "adaptive"
    assert r.weights["m"].success == 3 and r.weights["m"].latency == 0.5
    assert r.retry.attempts == 2 and r.retry.backoff == 0.25 and r.retry.deadline == 120
    assert r.retry.budget_ratio == 0.5 and r.retry.budget_window == 30
    assert r.breaker.failures == 3 and r.breaker.half_open_probes == 2
    assert r.health["p"].interval == 30
