"""Retry-After from an upstream is untrusted input: any value gives a bounded
wait or none, never an exception, and an absurd one still lets the request
fail over."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.errors import (MAX_RETRY_AFTER, ErrorClass, UpstreamError, parse_delay,
                               parse_retry_after)
from tests.fakes.faults import start_faulty_openai
from tests.fakes.openai_upstream import API_KEY
from tests.test_fallback import CHAT, post

ODD = ["inf", "-inf", "Infinity", "nan", "1e309", "-1e309", "1" * 400, "0x10", "١٢",
       "Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 99999 08:49:37 GMT",
       "Mon, 32 Foo 2024 99:99:99 GMT", "", " ", "12abc", "1_000", "\x00", "3.5"]


def _bounded(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and 0.0 <= value <= MAX_RETRY_AFTER)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.sampled_from(ODD), st.floats().map(repr),
                 st.integers().map(str)),
       st.one_of(st.none(), st.text(), st.sampled_from(ODD)))
def test_retry_after_parser_never_raises_and_is_bounded(retry_after, retry_after_ms):
    headers = {"retry-after": retry_after}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    value = parse_retry_after(headers)
    assert _bounded(value)
    err = UpstreamError(ErrorClass.RATE_LIMITED, 429, "slow down", retry_after=value)
    wait = err.headers.get("retry-after")
    assert wait is None or 0 <= int(wait) <= MAX_RETRY_AFTER


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text().map(lambda t: t + "s"), st.sampled_from([v + "s" for v in ODD]),
                 st.none(), st.integers(), st.floats()))
def test_protobuf_duration_parser_never_raises(text):
    assert _bounded(parse_delay(text))


def test_known_values():
    assert parse_retry_after({"retry-after": "inf"}) == MAX_RETRY_AFTER
    assert parse_retry_after({"retry-after-ms": "inf"}) == MAX_RETRY_AFTER
    assert parse_retry_after({"retry-after": "1e309"}) == MAX_RETRY_AFTER
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_delay("infs") == MAX_RETRY_AFTER and parse_delay("37s") == 37.0
    assert UpstreamError(ErrorClass.RATE_LIMITED, 429, "x",
                         retry_after=float("inf")).headers["retry-after"] == "86400"


@pytest.mark.parametrize("headers", [{"retry-after": "inf"}, {"retry-after": "1e309"},
                                     {"retry-after-ms": "inf"}])
async def test_infinite_retry_after_still_fails_over(start_gateway, headers):
    stack: list = []
    try:
        (_, first, one), (second_fake, _, two) = [await start_faulty_openai(stack)
                                                  for _ in range(2)]
        first.fail(1, 429, headers=headers)
        gw = await start_gateway(f"""
            providers:
              a: {{type: openai, base_url: '{one.url}/v1', api_key: {API_KEY}}}
              b: {{type: openai, base_url: '{two.url}/v1', api_key: {API_KEY}}}
            models:
              m: {{targets: [{{provider: a, model: gpt-4o}}, {{provider: b, model: gpt-4o}}]}}
        """)
        status, resp_headers, _ = await post(gw, {**CHAT, "model": "m"})
        assert status == 200
        assert resp_headers["x-gatewise-target"] == "b/gpt-4o"
        # the first target cools down for a bounded time, not forever
        status, resp_headers, _ = await post(gw, {**CHAT, "model": "m"})
        assert status == 200 and resp_headers["x-gatewise-target"] == "b/gpt-4o"
    finally:
        for server in stack:
            await server.close()


@pytest.mark.parametrize("delay", ["infs", "1e309s", "nans", "-5s", "soons"])
async def test_gemini_retry_delay_never_raises_and_still_fails_over(start_gateway, delay):
    from tests.fakes.gemini_upstream import FakeGemini, Reply
    from tests.fakes.server import LoopbackServer

    fake = FakeGemini()
    fake.script(Reply(status=429, message="Resource has been exhausted (e.g. check quota).",
                      details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": delay}]))
    async with LoopbackServer(fake.app) as server:
        gw = await start_gateway(f"""
            providers:
              gemini: {{type: gemini, base_url: "{server.url}", api_key: {fake.api_key}}}
              offline: {{type: mock}}
            models:
              flash: {{targets: [{{provider: gemini, model: gemini-2.5-flash}}],
                       fallbacks: [echo]}}
              echo: {{targets: [{{provider: offline, model: echo}}]}}
        """)
        status, headers, _ = await post(gw, {**CHAT, "model": "flash"})
        assert status == 200 and headers["x-gatewise-fallback"] == "echo"
