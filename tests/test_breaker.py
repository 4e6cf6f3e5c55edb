"""Circuit breakers: unit transitions, and open → half-open (N probes) → closed end to end."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from proxy.engine.breakers import CLOSED, HALF_OPEN, OPEN, PASS, PROBE, TargetBreaker
from proxy.config.routing import BreakerConfig
from proxy.core.errors import ErrorClass
from tests.fakes.faults import start_faulty_openai
from tests.fakes.openai_upstream import API_KEY

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def breaker(failures=3, reset_after=0.05, probes=2) -> TargetBreaker:
    return TargetBreaker("p/m", BreakerConfig(failures=failures, reset_after=reset_after,
                                              half_open_probes=probes))


def test_only_target_failures_count():
    b = breaker()
    for cls in (ErrorClass.BAD_REQUEST, ErrorClass.AUTH, ErrorClass.RATE_LIMITED,
                ErrorClass.CONTEXT_WINDOW, ErrorClass.CONTENT_FILTER, ErrorClass.NOT_FOUND) * 3:
        assert b.admit() == PASS
        b.record(PASS, cls)
    assert b.state == CLOSED
    for cls in (ErrorClass.SERVER, ErrorClass.TIMEOUT):
        b.record(b.admit(), cls)
    b.record(b.admit(), None)  # a success resets the count of consecutive failures
    for cls in (ErrorClass.OVERLOADED, ErrorClass.CONNECT):
        b.record(b.admit(), cls)
    assert b.state == CLOSED
    b.record(b.admit(), ErrorClass.SERVER)
    assert b.state == OPEN
    wait = b.admit()
    assert isinstance(wait, float) and 0 < wait <= 0.05


def test_half_open_admits_exactly_n_probes_then_closes():
    b = breaker(failures=1, reset_after=0.02, probes=2)
    b.record(b.admit(), ErrorClass.SERVER)
    assert b.state == OPEN
    time.sleep(0.03)
    tickets = [b.admit() for _ in range(5)]
    assert tickets[:2] == [PROBE, PROBE]
    assert all(isinstance(t, float) for t in tickets[2:])
    assert b.state == HALF_OPEN
    b.record(PROBE, None)
    assert b.state == HALF_OPEN and isinstance(b.admit(), float)  # still only two in all
    b.record(PROBE, None)
    assert b.state == CLOSED and b.admit() == PASS


def test_a_failed_probe_reopens_and_an_unsettled_one_frees_its_slot():
    b = breaker(failures=1, reset_after=0.02, probes=1)
    b.record(b.admit(), ErrorClass.CONNECT)
    time.sleep(0.03)
    assert b.admit() == PROBE
    b.record(PROBE, None, settled=False)  # the client went away: not a verdict
    assert b.admit() == PROBE
    b.record(PROBE, ErrorClass.TIMEOUT)
    assert b.state == OPEN and isinstance(b.admit(), float)


@pytest.fixture
async def ups():
    stack: list = []

    async def make(n: int):
        return [await start_faulty_openai(stack) for _ in range(n)]

    yield make
    for server in stack:
        await server.close()


def config(servers, breaker_yaml: str, models: str) -> str:
    lines = ["providers:"]
    for i, server in enumerate(servers, 1):
        lines.append(f"  u{i}: {{type: openai, base_url: '{server.url}/v1', api_key: {API_KEY}}}")
    return "\n".join(lines) + f"\nmodels:\n{models}\npolicies:\n  breaker: {breaker_yaml}\n"


async def post(http, gw, body):
    async with http.post(f"{gw.url}/v1/chat/completions", json=body) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_open_half_open_probes_under_load_then_closed(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(config(
        [s1, s2], "{failures: 3, reset_after: 300ms, half_open_probes: 2}",
        "  main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}"))
    path = "/v1/chat/completions"
    x1.fail(None, 500)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # three failures on u1, each served by u2
            status, headers, _ = await post(http, gw, {"model": "main", **CHAT})
            assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
        assert x1.seen[path] == 3
        status, headers, _ = await post(http, gw, {"model": "main", **CHAT})
        assert headers["x-gatewise-attempts"] == "1" and x1.seen[path] == 3  # open: skipped
        await asyncio.sleep(0.35)
        x1.clear()
        x1.stall(0.2, times=None)  # u1 has recovered but is slow: probes stay in flight
        results = await asyncio.gather(*(post(http, gw, {"model": "main", **CHAT})
                                         for _ in range(50)))
        assert all(r[0] == 200 for r in results)
        targets = [r[1]["x-gatewise-target"] for r in results]
        assert targets.count("u1/gpt-4o") == 2  # exactly the probes
        assert targets.count("u2/gpt-4o") == 48
        assert x1.seen[path] == 5
        status, headers, _ = await post(http, gw, {"model": "main", **CHAT})
        assert headers["x-gatewise-target"] == "u1/gpt-4o"  # closed again


async def test_every_target_open_is_503_at_once(ups, start_gateway):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    gw = await start_gateway(config(
        [s1, s2], "{failures: 2, reset_after: 30s}",
        "  main: {targets: [{provider: u1, model: gpt-4o}, {provider: u2, model: gpt-4o}]}"))
    x1.fail(None, 503)
    x2.fail(None, 500)
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            status, _, _ = await post(http, gw, {"model": "main", **CHAT})
            assert status in (500, 503)
        seen = x1.seen.total() + x2.seen.total()
        assert seen == 4
        status, headers, body = await post(http, gw, {"model": "main", "stream": True, **CHAT})
    assert status == 503
    assert 25 <= int(headers["retry-after"]) <= 30
    error = orjson.loads(body)["error"]
    assert error["code"] == "circuit_open" and error["type"] == "server_error"
    assert headers["x-gatewise-attempts"] == "0"
    assert x1.seen.total() + x2.seen.total() == seen  # nothing was sent upstream
