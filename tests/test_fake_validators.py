"""The fakes refuse a bad body the way the real APIs do: with a 400, never by
crashing into a 500 (which the gateway would then treat as an upstream outage,
hiding what the test meant to check)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.anthropic_validate import validate as anthropic, validate_count
from tests.fakes.openai_validate import validate as openai
from tests.fakes.responses_validate import validate as responses

WORDS = st.sampled_from(["text", "image", "tool_use", "tool_result", "user", "assistant",
                         "function", "message", "reasoning", "tool", "enabled",
                         "json_schema", "function_call", "base64", "url", "document",
                         "thinking", "ephemeral", "image/png", "application/pdf"])
KEYS = st.sampled_from(["type", "text", "role", "content", "id", "name", "input", "source",
                        "summary", "call_id", "arguments", "output", "parameters", "schema",
                        "format", "budget_tokens", "input_schema", "function", "media_type",
                        "data", "url", "tool_use_id", "cache_control", "signature"])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=4) | WORDS,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(KEYS, inner, max_size=3), max_leaves=15)
ANTHROPIC = ["max_tokens", "system", "tools", "tool_choice", "thinking",
             "output_config", "metadata", "stop_sequences", "temperature", "top_k"]
RESPONSES = ["input", "tools", "tool_choice", "text", "reasoning", "instructions",
             "include", "previous_response_id", "max_output_tokens", "metadata"]
OPENAI = ["messages", "tools", "tool_choice", "response_format", "stream_options",
          "max_tokens", "stop", "n", "reasoning_effort"]
HI = [{"role": "user", "content": "hi"}]
BLOCK = st.fixed_dictionaries({"type": st.sampled_from(
    ["text", "image", "document", "tool_use", "tool_result", "thinking"])}, optional={
    "source": st.fixed_dictionaries({"type": st.sampled_from(
        ["base64", "url", "text", "content", "file"])}, optional={
        "media_type": JSON, "data": JSON, "url": JSON}), "text": JSON, "id": JSON,
    "content": JSON, "input": JSON, "name": JSON})
TURNS = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                        "content": st.lists(BLOCK, max_size=3)}),
                 min_size=1, max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(ANTHROPIC), JSON, max_size=3),
       st.dictionaries(st.sampled_from(RESPONSES), JSON, max_size=3),
       st.dictionaries(st.sampled_from(OPENAI), JSON, max_size=3), TURNS)
def test_any_body_is_accepted_or_refused_never_a_crash(a, r, o, turns):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": turns}
    with_fields = {**body, **a}
    for problem in (anthropic(body), anthropic(with_fields), validate_count(
            {k: v for k, v in with_fields.items() if k != "max_tokens"})):
        assert problem is None or problem[0] == 400
    responses({"model": "gpt-4.1", "input": "hi", **r}, set())  # an error object, or None
    openai({"model": "gpt-4o", "messages": HI, **o})
