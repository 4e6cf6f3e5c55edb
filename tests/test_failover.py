"""Failures a retry cannot fix: an exhausted quota, a refused credential, a provider
without a key, a target that asked to be left alone. None is retried in place,
each fails over, and the final answer tells SDKs not to retry (they would
multiply upstream calls). Also: fallbacks obey the caller's allow-list, and the
last candidate gets a longer first-token timeout."""

from __future__ import annotations

import asyncio
import time

import openai
import orjson
import pytest

from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import Reply
from tests.test_fallback import CHAT, post, providers, ups  # noqa: F401 — the fixture

QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and "
                              "billing details.", "type": "insufficient_quota", "param": None,
                   "code": "insufficient_quota"}}
KEY = "sk-gw-failover-0123456789abcdef"


def two_targets(retry: str = "{attempts: 3, backoff: 1ms}") -> str:
    return f"""
models:
  main: {{targets: [{{provider: u1, model: gpt-4o}}, {{provider: u2, model: gpt-4o}}]}}
  solo: {{targets: [{{provider: u1, model: gpt-4o}}]}}
policies: {{retry: {retry}}}
"""


async def test_quota_is_never_retried_in_place_cools_down_and_fails_over(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + two_targets())
    x1.fail(None, 429, body=QUOTA)
    status, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    assert x1.seen.total() == 1  # once, not 1 + 3 retries
    # every later request leaves u1 alone while it cools down
    for _ in range(3):
        status, headers, _ = await post(gw, {"model": "main", **CHAT})
        assert status == 200 and headers["x-gatewise-attempts"] == "1"
    assert x1.seen.total() == 1


async def test_sole_target_out_of_quota_says_do_not_retry_then_answers_at_once(
        ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {solo: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 3, backoff: 1ms, quota_cooldown: 15m}}
""")
    x1.fail(None, 429, body=QUOTA)
    status, headers, body = await post(gw, {"model": "solo", **CHAT})
    assert status == 429 and headers["x-should-retry"] == "false"
    assert orjson.loads(body)["error"]["type"] == "insufficient_quota"
    assert x1.seen.total() == 1
    started = time.monotonic()
    status, headers, body = await post(gw, {"model": "solo", **CHAT})
    assert time.monotonic() - started < 1
    assert status == 429 and 890 <= int(headers["retry-after"]) <= 900
    assert headers["x-should-retry"] == "false"
    error = orjson.loads(body)["error"]
    assert error["code"] == "upstream_cooling_down" and error["type"] == "insufficient_quota"
    assert x1.seen.total() == 1  # the cooling target was not called


async def test_sole_target_that_asked_for_120s_is_not_called_again(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {solo: {targets: [{provider: u1, model: gpt-4o}]}}
""")
    x1.fail(1, 429, headers={"retry-after": "120"})
    status, headers, _ = await post(gw, {"model": "solo", **CHAT})
    assert status == 429 and headers["retry-after"] == "120"
    for _ in range(3):
        status, headers, _ = await post(gw, {"model": "solo", **CHAT})
        assert status == 429 and 115 <= int(headers["retry-after"]) <= 120
        assert headers["x-gatewise-attempts"] == "0"
    assert x1.seen.total() == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credential_fails_over_and_cools_down(ups, start_gateway, status):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + two_targets())
    x1.fail(None, status)
    got, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert got == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    got, headers, _ = await post(gw, {"model": "main", **CHAT})
    assert got == 200 and headers["x-gatewise-attempts"] == "1"
    assert x1.seen.total() == 1
    # nothing left (the sole target is cooling down): 502 naming the credential problem
    got, headers, body = await post(gw, {"model": "solo", **CHAT})
    assert got == 502 and headers["x-should-retry"] == "false"
    assert "credentials" in orjson.loads(body)["error"]["message"]
    assert x1.seen.total() == 1


async def test_refused_credential_with_nothing_left_is_502_without_retry(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models:
  solo: {targets: [{provider: u1, model: gpt-4o}], fallbacks: [other]}
  other: {targets: [{provider: u1, model: gpt-4o-mini}]}
""")
    x1.fail(None, 401)
    status, headers, body = await post(gw, {"model": "solo", **CHAT})
    assert status == 502 and headers["x-should-retry"] == "false"
    assert orjson.loads(body)["error"]["code"] == "upstream_auth_error"
    assert x1.seen.total() == 2  # the target, then the fallback's target: each once


async def _sdk_calls(gw, x1, model: str) -> tuple[int, type]:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x")  # default: 2 retries
    before = x1.seen.total()
    try:
        await client.chat.completions.create(model=model, **CHAT)
        raised = type(None)
    except openai.APIStatusError as exc:
        raised = type(exc)
    finally:
        await client.close()
    return x1.seen.total() - before, raised


async def test_sdk_create_makes_at_most_the_configured_upstream_calls(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)]) + """
models: {solo: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 2, backoff: 1ms, max_backoff: 1ms}}
""")
    x1.fail(None, 500)
    calls, raised = await _sdk_calls(gw, x1, "solo")
    assert raised is openai.InternalServerError
    assert calls == 3  # 1 + attempts: 2, and the SDK adds none (was 9)
    x1.clear()
    x1.fail(None, 429, body=QUOTA)
    calls, raised = await _sdk_calls(gw, x1, "solo")
    assert raised is openai.RateLimitError and calls == 1  # (was 9)


async def test_provider_without_key_is_503_without_retry_after(start_gateway):
    gw = await start_gateway("""
providers: {openai: {type: openai, api_key: "${UNSET_OPENAI_KEY}"}}
models: {gpt: {targets: [{provider: openai, model: gpt-4o}]}}
""")
    status, headers, body = await post(gw, {"model": "gpt", **CHAT})
    assert status == 503 and "retry-after" not in headers
    assert headers["x-should-retry"] == "false"
    assert "UNSET_OPENAI_KEY" in orjson.loads(body)["error"]["message"]
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x")  # default: 2 retries
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        await asyncio.wait_for(client.chat.completions.create(model="gpt", **CHAT), 10)
    assert time.monotonic() - started < 2  # was about 120 s (retry-after: 60, twice)
    await client.close()


# --- fallbacks and the caller's allow-list ------------------------------------------

def allow_list(any_fallback: str = "") -> str:
    return f"""
models:
  a: {{targets: [{{provider: u1, model: gpt-4o}}], fallbacks: [b],
      context_window_fallbacks: [b]}}
  b: {{targets: [{{provider: u2, model: gpt-4o}}]}}
keys:
  - {{name: only-a, key: {KEY}, models: [a]{any_fallback}}}
"""


async def test_fallback_models_obey_the_key_allow_list(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)]) + allow_list())
    auth = {"headers": {"authorization": f"Bearer {KEY}"}}
    status, _, _ = await post(gw, {"model": "b", **CHAT}, **auth)
    assert status == 403  # asking for b directly
    x1.fail(1, 500)
    status, headers, _ = await post(gw, {"model": "a", **CHAT}, **auth)
    assert status == 500 and "x-gatewise-fallback" not in headers
    overflow = {"error": {"message": "maximum context length", "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}
    x1.fail(1, 400, body=overflow)
    status, _, _ = await post(gw, {"model": "a", **CHAT}, **auth)
    assert status == 400
    assert x2.seen.total() == 0  # b was never called for this key


async def test_a_key_may_opt_in_to_any_fallback(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(providers([(f1, x1, s1), (f2, x2, s2)])
                             + allow_list(", any_fallback: true"))
    auth = {"headers": {"authorization": f"Bearer {KEY}"}}
    x1.fail(1, 500)
    status, headers, _ = await post(gw, {"model": "a", **CHAT}, **auth)
    assert status == 200 and headers["x-gatewise-fallback"] == "b"
    status, _, _ = await post(gw, {"model": "b", **CHAT}, **auth)
    assert status == 403  # still not by name


# --- the last candidate's first token ------------------------------------------------

async def test_last_candidate_gets_twice_the_first_token_timeout(ups, start_gateway):
    (f1, x1, s1), = await ups(1)
    gw = await start_gateway(providers([(f1, x1, s1)], first_token="300ms") + """
models: {solo: {targets: [{provider: u1, model: gpt-4o}]}}
policies: {retry: {attempts: 2, backoff: 1ms}}
""")
    f1.script(Reply(stall=0.45))
    status, headers, raw = await post(gw, {"model": "solo", "stream": True, **CHAT})
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    assert headers["x-gatewise-attempts"] == "1" and len(f1.requests) == 1


async def test_first_token_last_is_configurable_and_not_for_earlier_targets(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(
        providers([(f1, x1, s1), (f2, x2, s2)], first_token="300ms", first_token_last="1s")
        + two_targets("{attempts: 0}"))
    x1.add(Fault(stall=0.6))
    x2.add(Fault(stall=0.6))
    started = time.monotonic()
    status, headers, _ = await post(gw, {"model": "main", "stream": True, **CHAT})
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    assert headers["x-gatewise-attempts"] == "2"
    assert time.monotonic() - started < 3  # (not 0.3 + 1 + retries)


# --- quota and billing, per provider ----------------------------------------------------

@pytest.mark.parametrize("kind, reply", [
    ("anthropic", {"status": 402, "error_type": "billing_error",
                   "message": "Your account has no credit."}),
    ("anthropic", {"status": 400, "error_type": "invalid_request_error",
                   "message": "Your credit balance is too low to access the Anthropic API. "
                              "Please go to Plans & Billing to upgrade or purchase credits."}),
    ("gemini", {"status": 429, "message": "You exceeded your current quota.", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
             "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}),
])
async def test_spent_credit_fails_over_on_every_provider(start_gateway, kind, reply):
    from tests.fakes import anthropic_upstream, gemini_upstream
    from tests.fakes.server import LoopbackServer

    module = anthropic_upstream if kind == "anthropic" else gemini_upstream
    fake = module.FakeAnthropic() if kind == "anthropic" else module.FakeGemini()
    fake.script(module.Reply(**reply))
    model = "claude-sonnet-4-5" if kind == "anthropic" else "gemini-2.5-flash"
    async with LoopbackServer(fake.app) as server:
        gw = await start_gateway(f"""
            providers:
              up: {{type: {kind}, base_url: "{server.url}", api_key: {fake.api_key}}}
              offline: {{type: mock}}
            models:
              main: {{targets: [{{provider: up, model: {model}}}, {{provider: offline, model: echo}}]}}
              solo: {{targets: [{{provider: up, model: {model}}}]}}
            policies: {{retry: {{attempts: 2, backoff: 1ms}}}}
        """)
        status, headers, _ = await post(gw, {"model": "main", **CHAT})
        assert status == 200 and headers["x-gatewise-target"] == "offline/echo"
        assert len(fake.requests) == 1  # never retried in place
        status, headers, body = await post(gw, {"model": "solo", **CHAT})
        assert status == 429 and headers["x-should-retry"] == "false"
        assert orjson.loads(body)["error"]["type"] == "insufficient_quota"
        assert len(fake.requests) == 1  # cooling down: not called again
