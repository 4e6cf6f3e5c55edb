"""Prompt-cache writes and reads are priced as Anthropic bills them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.catalog import ModelInfo, lookup
from proxy.core.usage import Usage
from proxy.server.configure import parse_config
from translators.anthropic_stream import anthropic_usage

SONNET = lookup("claude-sonnet-4-5-20250929")


def test_the_table_prices_claude_cache_writes_above_input():
    assert (SONNET.input, SONNET.cached_input, SONNET.cache_write, SONNET.cache_write_1h) == (
        3.0, 0.3, 3.75, 6.0)


def test_usage_keeps_writes_apart_and_prices_each_kind():
    usage = anthropic_usage({"input_tokens": 100, "cache_creation_input_tokens": 3000,
                             "cache_read_input_tokens": 20000, "output_tokens": 500,
                             "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                "ephemeral_1h_input_tokens": 2000}})
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens,
            usage.cache_write_1h_tokens, usage.completion_tokens) == (23100, 20000, 3000,
                                                                      2000, 500)
    cost = SONNET.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                       usage.cache_write_tokens, usage.cache_write_1h_tokens)
    assert cost == pytest.approx((100 * 3.0 + 20000 * 0.3 + 1000 * 3.75 + 2000 * 6.0
                                  + 500 * 15.0) / 1e6)


@pytest.mark.parametrize("raw", [
    {"input_tokens": "12", "output_tokens": None, "cache_creation_input_tokens": -5},
    {"input_tokens": True, "cache_creation": "x", "cache_read_input_tokens": 1.5},
    {"cache_creation_input_tokens": 10, "cache_creation": {"ephemeral_1h_input_tokens": 99}},
])
def test_odd_usage_values_count_as_nothing_never_crash(raw):
    usage = anthropic_usage(raw)
    assert usage.cache_write_1h_tokens <= usage.cache_write_tokens <= usage.prompt_tokens


@pytest.mark.parametrize("raw,counts", [
    ({"prompt_tokens": "12", "completion_tokens": -5}, (0, 0, 0, 0)),
    ({"prompt_tokens": 12.0, "completion_tokens": True, "prompt_tokens_details": "x",
      "completion_tokens_details": {"reasoning_tokens": [1]}}, (12, 0, 0, 0)),
    ({"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {
        "cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 2}},
     (9, 4, 3, 2)),
])
def test_odd_openai_usage_values_count_as_nothing_never_crash(raw, counts):
    """A compatible server's usage is read as counts: a string was a ValueError (a 500
    after the upstream had answered) and a negative number a negative cost."""
    usage = Usage.from_openai(raw)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == counts


def test_odd_gemini_and_ollama_usage_values_count_as_nothing():
    from translators.gemini_stream import gemini_usage
    from translators.ollama import ollama_usage
    usage = gemini_usage({"promptTokenCount": "x", "candidatesTokenCount": 4,
                          "thoughtsTokenCount": [1], "cachedContentTokenCount": -2})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (0, 4, 0)
    usage = ollama_usage({"prompt_eval_count": {}, "eval_count": "3"})
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 0)


def test_a_model_without_write_prices_bills_writes_at_input():
    info = ModelInfo(input=2.0, output=4.0, cached_input=1.0)
    assert info.cost(1000, 0, 0, 400, 100) == pytest.approx(1000 * 2.0 / 1e6)
    only_5m = ModelInfo(input=2.0, output=4.0, cache_write=3.0)
    assert only_5m.cost(1000, 0, 0, 400, 100) == pytest.approx((600 * 2 + 400 * 3) / 1e6)


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7),
       st.integers(0, 10**7), st.integers(0, 10**7))
def test_cost_never_negative_and_never_above_all_at_the_top_price(prompt, out, cached, writes,
                                                                   long):
    cost = SONNET.cost(prompt, out, cached, writes, long)
    assert 0 <= cost <= (prompt * 6.0 + out * 15.0) / 1e6 + 1e-12


def test_price_overrides_take_cache_write_prices():
    config = parse_config("""
        providers: {a: {type: anthropic, api_key: k}}
        models:
          c: {targets: [{provider: a, model: claude-sonnet-4-5,
                         price: {cache_write: 5, cache_write_1h: 9}}]}
    """, {})
    info = config.models["c"].targets[0].info
    assert (info.input, info.cache_write, info.cache_write_1h) == (3.0, 5.0, 9.0)
