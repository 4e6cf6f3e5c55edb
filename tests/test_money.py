"""Every token an upstream bills is recorded once, with what the client got: `n`
choices are reserved, attempts that failed after the upstream began are
billed, a stream without a usage chunk is billed an estimate (not the
reservation), and the ledger stores the status and error class the client saw."""

from __future__ import annotations

import asyncio
import sqlite3

import aiohttp
import pytest

from proxy.core.pricing import estimate_body
from proxy.server.gateway import GATEWAY
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import Reply
from tests.test_fallback import CHAT, post, providers, ups  # noqa: F401 — the fixture

KEY = "sk-gw-money-0123456789abcdef"
AUTH = {"authorization": f"Bearer {KEY}"}
# $1000 per million tokens either way: a token costs $0.001
PRICE = "price: {input: 1000, output: 1000}, max_output: 16384"


def gateway_yaml(upstreams, db: str, budget: str = "{usd: 20}", extra: str = "",
                 **timeouts) -> str:
    two = (f"  two: {{targets: [{{provider: u1, model: gpt-4o, {PRICE}}}, "
           f"{{provider: u2, model: gpt-4o, {PRICE}}}]}}\n") if len(upstreams) > 1 else ""
    return providers(upstreams, **timeouts) + f"""
models:
  gpt: {{targets: [{{provider: u1, model: gpt-4o, {PRICE}}}]}}
{two}keys: [{{name: app, key: {KEY}, budget: {budget}}}]
state: {{ledger: "sqlite:{db}"}}
{extra}"""


async def rows(gw, db: str, where: str = "1") -> list[sqlite3.Row]:
    await gw.app[GATEWAY].budget.ledger.flush()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT * FROM spend WHERE {where} ORDER BY id").fetchall()
    finally:
        conn.close()


# --- item 2: n choices, and a reservation that covers them -------------------------

async def test_n_choices_are_reserved_and_a_budget_cannot_be_overrun(ups, start_gateway,
                                                                     tmp_path):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db))
    # eight choices, no max_tokens: up to 8 x 16384 output tokens = $131 > $20
    f1.script(Reply(usage={"prompt_tokens": 10, "completion_tokens": 8 * 16384,
                           "total_tokens": 10 + 8 * 16384}))
    status, headers, body = await post(gw, {"model": "gpt", "n": 8, **CHAT}, headers=AUTH)
    assert status == 429 and b"budget_exceeded" in body
    assert not f1.requests  # refused before anything went upstream
    # one choice fits (16384 + prompt ≈ $16.4)
    status, headers, _ = await post(gw, {"model": "gpt", **CHAT}, headers=AUTH)
    assert status == 200
    [row] = await rows(gw, db)
    assert row["reserved"] == pytest.approx((16384 + estimate_body(
        {"model": "gpt", **CHAT}).prompt_tokens) / 1000)


async def test_n_choices_billed_as_the_upstream_bills_them(ups, start_gateway, tmp_path):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db, budget="{usd: 1000}"))
    status, headers, _ = await post(gw, {"model": "gpt", "n": 3, "max_tokens": 50, **CHAT},
                                    headers=AUTH)
    assert status == 200
    [row] = await rows(gw, db)
    usage = f1.requests and None
    billed = row["prompt_tokens"] + row["completion_tokens"]
    assert row["completion_tokens"] == 3 * ((len("Hello! How can I help you today?") // 4) + 1)
    assert row["cost"] == pytest.approx(billed / 1000)
    assert row["reserved"] >= row["cost"]  # 3 x 50 output tokens were reserved
    assert row["reserved"] == pytest.approx(
        (estimate_body({"model": "gpt", "n": 3, "max_tokens": 50, **CHAT}).prompt_tokens
         + 150) / 1000)
    assert usage is None


async def test_overshoot_is_recorded_in_full_and_the_key_refused_after(ups, start_gateway,
                                                                       tmp_path):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db, budget="{usd: 5}"))
    # an upstream that bills far past the cap it was given (it happens: e.g. a
    # compatible server ignoring max_tokens)
    f1.script(Reply(usage={"prompt_tokens": 10, "completion_tokens": 6000,
                           "total_tokens": 6010}))
    status, _, _ = await post(gw, {"model": "gpt", "max_tokens": 10, **CHAT}, headers=AUTH)
    assert status == 200
    [row] = await rows(gw, db)
    assert row["cost"] == pytest.approx(6.01) and row["reserved"] < 0.1
    status, headers, body = await post(gw, {"model": "gpt", "max_tokens": 1, **CHAT},
                                       headers=AUTH)
    assert status == 429 and b"budget_exceeded" in body
    assert headers["x-should-retry"] == "false"
    assert len(f1.requests) == 1


def test_prompt_estimate_does_not_fall_far_below_real_usage():
    chinese = "你好，我想了解一下今天的天气怎么样。" * 50  # about one token per character
    assert estimate_body({"messages": [{"role": "user", "content": chinese}]}).prompt_tokens \
        >= len(chinese)
    schema = {"type": "object", "properties": {f"field_{i}": {
        "type": "string", "description": "a long description of this field " * 4}
        for i in range(40)}}
    plain = estimate_body({"messages": [{"role": "user", "content": "hi"}]}).prompt_tokens
    with_schema = estimate_body({"messages": [{"role": "user", "content": "hi"}],
                                 "response_format": {"type": "json_schema", "json_schema": {
                                     "name": "x", "schema": schema}}}).prompt_tokens
    assert with_schema - plain > 1000  # the schema is prompt too
    parts = estimate_body({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 4000},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10**6}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
         "function": {"name": "f", "arguments": "y" * 4000}}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "z" * 4000}]},
    ]}).prompt_tokens
    assert 3000 + 1105 <= parts < 3000 + 1105 + 100  # image data is not text


# --- item 3: attempts that consumed tokens are billed, even when they failed ---------

async def test_attempt_cut_after_the_upstream_began_is_billed(ups, start_gateway, tmp_path):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1), (f2, x2, s2)], db,
                                          budget="{usd: 1000}", first_token="300ms"))
    f1.script(Reply(pauses={1: 1.0}))  # the role chunk, then nothing within first_token
    status, headers, raw = await post(gw, {"model": "two", "stream": True, **CHAT},
                                      headers=AUTH)
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    first, second = await rows(gw, db)
    prompt = estimate_body({"model": "two", **CHAT}).prompt_tokens
    assert (first["target"], first["state"], first["http_status"]) == ("u2/gpt-4o", "done", 200)
    assert (second["target"], second["parent"], second["error_class"]) == (
        "u1/gpt-4o", first["id"], "timeout")
    assert second["prompt_tokens"] == prompt and second["estimated"] == 1
    assert second["cost"] == pytest.approx(prompt / 1000)
    # the request's cost is both attempts', and so is what the budget holds
    budget = gw.app[GATEWAY].budget
    spent, held = budget.store.used(next(iter(budget._scope_cache.values()))[4][0])
    assert spent == pytest.approx(first["cost"] + second["cost"]) and held == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_timeouts_and_drops_before_content_are_billed(ups, start_gateway, tmp_path,
                                                            stream):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1), (f2, x2, s2)], db,
                                          budget="{usd: 1000}", first_token="300ms",
                                          total="300ms"))
    if stream:
        x1.drop_after(1)  # the role chunk, then the connection is cut
    else:
        x1.add(Fault(stall=1.0))  # the upstream works past the total timeout
    status, headers, _ = await post(gw, {"model": "two", "stream": stream, **CHAT},
                                    headers=AUTH)
    assert status == 200 and headers["x-gatewise-target"] == "u2/gpt-4o"
    first, second = await rows(gw, db)
    assert second["target"] == "u1/gpt-4o" and second["estimated"] == 1
    assert second["cost"] > 0 and second["parent"] == first["id"]
    report = await gw.app[GATEWAY].budget.ledger.report("key", 0.0)
    assert report[0]["requests"] == 1
    assert report[0]["cost_usd"] == pytest.approx(first["cost"] + second["cost"])


async def test_refused_attempts_bill_nothing(ups, start_gateway, tmp_path):
    (f1, x1, s1), (f2, x2, s2) = await ups(2)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1), (f2, x2, s2)], db,
                                          budget="{usd: 1000}"))
    x1.fail(1, 503)
    status, _, _ = await post(gw, {"model": "two", **CHAT}, headers=AUTH)
    assert status == 200
    [row] = await rows(gw, db)  # no row for the 503: an error answer is not billed
    assert row["target"] == "u2/gpt-4o" and row["estimated"] == 0


# --- item 6: a stream without a usage chunk --------------------------------------

async def test_stream_without_usage_is_billed_an_estimate_not_the_reservation(
        ups, start_gateway, tmp_path):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db))
    f1.script(Reply(usage_chunk=False))  # a compatible server ignoring include_usage
    status, _, raw = await post(gw, {"model": "gpt", "stream": True, **CHAT}, headers=AUTH)
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    [row] = await rows(gw, db)
    words = len("Hello! How can I help you today?".split())
    assert row["estimated"] == 1 and row["prompt_tokens"] > 0
    assert words <= row["completion_tokens"] <= words + 1  # about a token per chunk
    assert row["cost"] == pytest.approx(
        (row["prompt_tokens"] + row["completion_tokens"]) / 1000)
    assert row["cost"] < row["reserved"] / 100


# --- item 5: the status the client got, and why ------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status, error_class", [(429, "rate_limited"), (500, "server"),
                                                 (400, "bad_request")])
async def test_upstream_errors_are_recorded_with_their_status_and_class(
        ups, start_gateway, tmp_path, caplog, stream, status, error_class):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db))
    x1.fail(1, status)
    with caplog.at_level("INFO", logger="gatewise.access"):
        got, _, _ = await post(gw, {"model": "gpt", "stream": stream, **CHAT}, headers=AUTH)
    assert got == status
    [row] = await rows(gw, db)
    assert (row["http_status"], row["error_class"], row["cost"]) == (status, error_class, 0)
    [line] = [r for r in caplog.records if r.name == "gatewise.access"]
    assert (line.fields["status"], line.fields["error_class"]) == (status, error_class)


async def test_internal_error_is_500_in_ledger_and_access_log(ups, start_gateway, tmp_path,
                                                              caplog, monkeypatch):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db))
    from translators.openai import OpenAITranslator

    def explode(self, status, headers, body):
        raise RuntimeError("boom")

    monkeypatch.setattr(OpenAITranslator, "response", explode)
    with caplog.at_level("INFO", logger="gatewise.access"):
        got, _, _ = await post(gw, {"model": "gpt", **CHAT}, headers=AUTH)
    assert got == 500
    [row] = await rows(gw, db)
    assert (row["http_status"], row["error_class"]) == (500, "gateway_internal_error")
    [line] = [r for r in caplog.records if r.name == "gatewise.access"]
    assert line.fields["status"] == 500
    assert line.fields["error_class"] == "gateway_internal_error"
    # the upstream answered 200 and billed it: the attempt is recorded, estimated
    assert row["prompt_tokens"] > 0 and row["estimated"] == 1


async def test_499_means_the_client_went_away(ups, start_gateway, tmp_path):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db))
    x1.stall(5.0)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(f"{gw.url}/v1/chat/completions", headers=AUTH,
                                 json={"model": "gpt", **CHAT},
                                 timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                await resp.read()
    for _ in range(100):
        found = await rows(gw, db, "state != 'pending'")
        if found:
            break
        await asyncio.sleep(0.02)
    [row] = found
    assert (row["http_status"], row["error_class"]) == (499, "client_closed")
    assert row["estimated"] == 1 and row["prompt_tokens"] > 0  # the upstream had it


# --- usage an upstream reports is untrusted input ------------------------------------

@pytest.mark.parametrize("value", ["abc", -5, 1e300, None, [], 3.7, True])
async def test_odd_usage_figures_never_crash_nor_bill_absurdly(ups, start_gateway, tmp_path,
                                                              value):
    (f1, x1, s1), = await ups(1)
    db = str(tmp_path / "l.db")
    gw = await start_gateway(gateway_yaml([(f1, x1, s1)], db, budget="{usd: 1000}"))
    f1.script(Reply(usage={"prompt_tokens": value, "completion_tokens": value,
                           "total_tokens": value}))
    status, _, _ = await post(gw, {"model": "gpt", "max_tokens": 10, **CHAT}, headers=AUTH)
    assert status == 200
    [row] = await rows(gw, db)
    assert 0 <= row["prompt_tokens"] <= 10**9 and 0 <= row["completion_tokens"] <= 10**9
    assert row["cost"] <= 2 * 10**9 / 1000


def test_token_counts_are_bounded_ints_for_any_json_value():
    from hypothesis import given
    from hypothesis import strategies as st

    from proxy.core.usage import MAX_TOKENS, Usage, token_count

    json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))

    @given(json, json)
    def check(a, b):
        assert 0 <= token_count(a) <= MAX_TOKENS and type(token_count(a)) is int
        usage = Usage.from_openai({"prompt_tokens": a, "completion_tokens": b,
                                   "prompt_tokens_details": a})
        assert all(type(v) is int and 0 <= v <= MAX_TOKENS for v in (
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens))

    check()
