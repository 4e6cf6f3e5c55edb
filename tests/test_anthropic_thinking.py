"""Extended thinking with tools for OpenAI clients: the `openai` SDK → gatewise
`/v1/chat/completions` → the fake Anthropic API, which (like Anthropic) refuses a
tool turn whose thinking is missing or altered. The thinking blocks ride in the
tool call ids (translators/anthropic_thinking.py)."""

from __future__ import annotations

import base64
import zlib

import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, Reply
from tests.fakes.server import LoopbackServer
from translators.anthropic_thinking import MARK, carry, split

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
THOUGHT = "The user wants the weather; I should call the tool. " * 20


@pytest.fixture
async def fake():
    fake = FakeAnthropic()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def client(fake, start_gateway):
    gw = await start_gateway(f"""
        providers:
          anthropic: {{type: anthropic, base_url: "{fake.url}", api_key: {API_KEY}}}
        models:
          claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
    """)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as c:
        yield c


def _first_turn(fake):
    fake.script(Reply(text="Let me look.", thinking=THOUGHT, redacted="OPAQUE+/=",
                      tool_calls=[{"id": "toolu_01", "name": "get_weather",
                                   "input": {"city": "Paris"}},
                                  {"id": "toolu_02", "name": "get_weather",
                                   "input": {"city": "Rome"}}]),
                Reply(text="Sunny in both."))


def _answers(message) -> list[dict]:
    return [message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
        for call in message.tool_calls]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_survives_the_tool_turn(fake, client, stream):
    _first_turn(fake)
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    args = {"model": "claude", "tools": TOOLS, "reasoning_effort": "low",
            "max_completion_tokens": 4000}
    if stream:
        async with client.chat.completions.stream(messages=messages, **args) as s:
            first = (await s.get_final_completion()).choices[0].message
    else:
        first = (await client.chat.completions.create(messages=messages,
                                                      **args)).choices[0].message
    calls = first.tool_calls
    assert MARK in calls[0].id and MARK not in calls[1].id  # the first call carries it
    assert all(c.id.replace("-", "").replace("_", "").isalnum() for c in calls)
    reply = await client.chat.completions.create(messages=messages + _answers(first), **args)
    assert reply.choices[0].message.content == "Sunny in both."
    turn = fake.last["messages"][1]["content"]
    assert [b["type"] for b in turn] == ["thinking", "redacted_thinking", "text", "tool_use",
                                         "tool_use"]
    assert turn[0]["thinking"] == THOUGHT and turn[1]["data"] == "OPAQUE+/="
    assert [b["id"] for b in turn[3:]] == ["toolu_01", "toolu_02"]
    results = fake.last["messages"][2]["content"]
    assert [r["tool_use_id"] for r in results] == ["toolu_01", "toolu_02"]


async def test_without_thinking_on_the_blocks_are_not_replayed(fake, client):
    _first_turn(fake)
    messages = [{"role": "user", "content": "Weather?"}]
    first = (await client.chat.completions.create(
        model="claude", tools=TOOLS, messages=messages, reasoning_effort="low",
        max_completion_tokens=4000)).choices[0].message
    await client.chat.completions.create(model="claude", tools=TOOLS,
                                         messages=messages + _answers(first))
    assert [b["type"] for b in fake.last["messages"][1]["content"]] == ["text", "tool_use",
                                                                        "tool_use"]


async def test_a_client_that_rewrites_ids_gets_anthropics_refusal(fake, client):
    _first_turn(fake)
    messages = [{"role": "user", "content": "Weather?"}]
    args = {"model": "claude", "tools": TOOLS, "reasoning_effort": "low",
            "max_completion_tokens": 4000}
    first = (await client.chat.completions.create(messages=messages, **args)).choices[0].message
    answers = _answers(first)
    cut = first.tool_calls[0].id[:-9]  # truncated: its blocks cannot be read back
    answers[0]["tool_calls"][0]["id"] = answers[1]["tool_call_id"] = cut
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(messages=messages + answers, **args)
    assert "Expected `thinking` or `redacted_thinking`" in err.value.message


def test_carried_ids_round_trip_and_refuse_garbage():
    blocks = [{"type": "thinking", "thinking": "é\n" * 50, "signature": "sig"},
              {"type": "redacted_thinking", "data": "xyz"}]
    assert split(carry("toolu_9", blocks)) == ("toolu_9", blocks)
    assert carry("toolu_9", []) == "toolu_9" and split("toolu_9") == ("toolu_9", [])
    for junk in ("!!!", "AAAA", base64.urlsafe_b64encode(zlib.compress(b'{"a":1}')).decode(),
                 base64.urlsafe_b64encode(zlib.compress(b'[{"type":"text"},7]')).decode()):
        assert split("toolu_9" + MARK + junk) == ("toolu_9", [])


def test_a_decompression_bomb_is_refused_cheaply():
    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" + b" " * (64 << 20) + b"]", 9))
    assert len(bomb) < 100_000
    assert split("toolu_9" + MARK + bomb.decode().rstrip("=")) == ("toolu_9", [])
