"""End to end: the official `anthropic` SDK → gatewise `/v1/messages` → the faithful
fake Anthropic API. A pass-through: the client's body goes up with only `model`
replaced, the upstream's JSON and events come back as they were, and keys,
betas, limits, the ledger and fallbacks still apply."""

from __future__ import annotations

import base64
import sqlite3

import aiohttp
import anthropic
import orjson
import pytest

from proxy.server.gateway import GATEWAY
from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, Reply
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.server import LoopbackServer

TEAM = "team-key-0123456789abcdef"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture
async def fakes():
    main, backup, openai_fake = FakeAnthropic(), FakeAnthropic(), FakeOpenAI()
    async with LoopbackServer(main.app) as a, LoopbackServer(backup.app) as b, \
            LoopbackServer(openai_fake.app) as o:
        main.url, backup.url, openai_fake.url = a.url, b.url, o.url
        yield main, backup, openai_fake


@pytest.fixture
async def gw(fakes, start_gateway, tmp_path):
    main, backup, openai_fake = fakes
    return await start_gateway(f"""
        providers:
          anthropic: {{type: anthropic, base_url: "{main.url}", api_key: {API_KEY},
                      anthropic_beta: "token-efficient-tools-2025-02-19",
                      allowed_betas: [interleaved-thinking-2025-05-14, context-1m-2025-08-07]}}
          backup: {{type: anthropic, base_url: "{backup.url}", api_key: {API_KEY}}}
          openai: {{type: openai, base_url: "{openai_fake.url}/v1", api_key: "{OPENAI_KEY}"}}
        models:
          claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5-20250929}}]}}
          claude-ha:
            targets: [{{provider: anthropic, model: claude-sonnet-4-5}},
                      {{provider: backup, model: claude-haiku-4-5}}]
          claude-or-gpt:
            targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]
            fallbacks: [gpt]
          gpt: {{targets: [{{provider: openai, model: gpt-4o}}]}}
        keys:
          - {{name: team, key: "{TEAM}"}}
        state: {{ledger: "sqlite:{tmp_path / 'ledger.db'}"}}
    """)


@pytest.fixture
async def client(gw):
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=TEAM, max_retries=0) as c:
        yield c


async def ledger(gw) -> list[tuple]:
    gateway = gw.app[GATEWAY]
    await gateway.budget.ledger.flush()
    return sqlite3.connect(gateway.config.state.ledger).execute(
        "SELECT model, target, http_status, prompt_tokens, completion_tokens, cached_tokens, "
        "cost, stream FROM spend ORDER BY created_at").fetchall()


async def test_create_passes_the_body_and_the_answer_through(fakes, client, gw):
    main = fakes[0]
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": PDF}, "title": "spec"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "Summarise.", "cache_control": {"type": "ephemeral",
                                                                 "ttl": "1h"}}]}]
    reply = await client.messages.create(
        model="claude", max_tokens=300, system=system, messages=messages, tools=TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        extra_body={"top_k": 5, "temperature": 0.5},  # older API versions' sampling fields
        stop_sequences=["END"], metadata={"user_id": "u-1"},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14, not-allowed-1"})
    sent = main.requests[-1]
    assert sent.body == {"model": "claude-sonnet-4-5-20250929", "max_tokens": 300,
                         "system": system, "messages": messages, "tools": TOOLS,
                         "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
                         "top_k": 5, "temperature": 0.5, "stop_sequences": ["END"],
                         "metadata": {"user_id": "u-1"}}
    assert sent.headers["x-api-key"] == API_KEY  # the gateway's key, never the client's
    assert TEAM not in str(sent.headers)
    assert sent.headers["anthropic-beta"] == ("token-efficient-tools-2025-02-19,"
                                              "interleaved-thinking-2025-05-14")
    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert reply.type == "message" and reply.content[0].text.startswith("Hello")
    assert reply.model == "claude-sonnet-4-5-20250929"
    assert reply.usage.input_tokens > 0


async def test_json_answer_is_the_upstreams_own_bytes(fakes, gw):
    main = fakes[0]
    main.script(Reply(text="exact bytes"))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/messages", headers={"x-api-key": TEAM, "anthropic-version": "2023-06-01"},
            json={"model": "claude", "max_tokens": 10,
                  "messages": [{"role": "user", "content": "hi"}]}) as resp:
        body = await resp.read()
        assert resp.status == 200 and resp.headers["request-id"].startswith("req_")
        assert resp.headers["x-gatewise-target"] == "anthropic/claude-sonnet-4-5-20250929"
    parsed = orjson.loads(body)
    assert parsed["content"] == [{"type": "text", "text": "exact bytes"}]
    assert body == orjson.dumps(parsed)  # as the fake encoded it, key order and all


async def test_stream_is_the_upstreams_events_byte_for_byte(fakes, gw):
    main = fakes[0]
    main.script(Reply(text="one two three", thinking="let me see", split=9,
                      tool_calls=[{"name": "get_weather", "input": {"city": "Paris"}}]))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/messages", headers={"x-api-key": TEAM, "anthropic-version": "2023-06-01"},
            json={"model": "claude", "max_tokens": 3000, "stream": True, "tools": TOOLS,
                  "thinking": {"type": "enabled", "budget_tokens": 1024},
                  "messages": [{"role": "user", "content": "weather?"}]}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        got = await resp.read()
    assert got == main.streams[-1]


async def test_stream_final_message_with_thinking_and_a_tool_round_trip(fakes, client, gw):
    main = fakes[0]
    main.script(Reply(text="Let me check.", thinking="The user wants Paris weather.",
                      redacted="EnCrYpTeD==",
                      tool_calls=[{"id": "toolu_01A", "name": "get_weather",
                                   "input": {"city": "Paris"}}]),
                Reply(text="Sunny in Paris."))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    async with client.messages.stream(model="claude", max_tokens=4096, thinking=thinking,
                                      tools=TOOLS, messages=messages) as stream:
        first = await stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "redacted_thinking", "text",
                                               "tool_use"]
    assert first.content[0].signature.startswith("sig_") and first.stop_reason == "tool_use"
    assert first.content[3].input == {"city": "Paris"}
    messages += [first.to_param(), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny, 24C"}]}]
    second = await client.messages.create(model="claude", max_tokens=4096, thinking=thinking,
                                          tools=TOOLS, messages=messages)
    assert second.content[-1].text == "Sunny in Paris."
    replayed = main.requests[-1].body["messages"][1]["content"]
    assert replayed[0]["signature"] == first.content[0].signature  # unchanged, so accepted
    assert replayed[1] == {"type": "redacted_thinking", "data": "EnCrYpTeD=="}


async def test_cache_tokens_are_billed_at_their_prices(fakes, client, gw):
    main = fakes[0]
    usage = {"input_tokens": 50, "cache_creation_input_tokens": 3000,
             "cache_read_input_tokens": 20000, "output_tokens": 100,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                "ephemeral_1h_input_tokens": 2000}}
    main.script(Reply(text="cached", usage=usage), Reply(text="cached", usage=usage))
    args = {"model": "claude", "max_tokens": 200,
            "messages": [{"role": "user", "content": "hi"}]}
    reply = await client.messages.create(**args)
    assert (reply.usage.cache_creation_input_tokens, reply.usage.cache_read_input_tokens) == (
        3000, 20000)
    async with client.messages.stream(**args) as stream:
        streamed = await stream.get_final_message()
    assert streamed.usage.cache_read_input_tokens == 20000
    # claude-sonnet-4-5: input $3, cache reads $0.30, 5-minute writes $3.75, 1-hour writes
    # $6, output $15 per million
    cost = (50 * 3 + 20000 * 0.3 + 1000 * 3.75 + 2000 * 6 + 100 * 15) / 1e6
    rows = await ledger(gw)
    assert rows == [("claude", "anthropic/claude-sonnet-4-5-20250929", 200, 23050, 100, 20000,
                     pytest.approx(cost), stream) for stream in (0, 1)]


async def test_the_key_may_come_as_a_bearer_token(gw):
    async with anthropic.AsyncAnthropic(base_url=gw.url, auth_token=TEAM, api_key=None,
                                        max_retries=0) as c:
        reply = await c.messages.create(model="claude", max_tokens=10,
                                        messages=[{"role": "user", "content": "hi"}])
    assert reply.content


async def test_upstream_overloaded_is_529_and_the_sdk_retries_as_against_anthropic(fakes, gw):
    main = fakes[0]
    main.script(*[Reply(status=529)] * 3)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=TEAM) as c:  # 2 retries
        with pytest.raises(anthropic.OverloadedError) as err:
            await c.messages.create(model="claude", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 529
    assert err.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert len(main.requests) == 3  # one call per SDK attempt, as against Anthropic
    assert [row[2] for row in await ledger(gw)] == [529, 529, 529]  # what the client saw


async def test_rate_limit_keeps_retry_after(fakes, client):
    main = fakes[0]
    main.script(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as err:
        await client.messages.create(model="claude", max_tokens=10,
                                     messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.body["error"]["type"] == "rate_limit_error"


async def test_an_error_before_content_falls_back_to_the_next_target(fakes, client):
    main, backup, _ = fakes
    main.script(Reply(error_after=2))  # message_start, ping, then overloaded
    backup.script(Reply(text="from the backup"))
    async with client.messages.stream(model="claude-ha", max_tokens=100,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == "from the backup"
    assert backup.requests[-1].body["model"] == "claude-haiku-4-5"


async def test_an_error_after_content_ends_the_stream_with_an_error_event(fakes, gw):
    main = fakes[0]
    main.script(Reply(text="one two three four", error_after=5, error_delay=0.05))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/messages", headers={"x-api-key": TEAM},
            json={"model": "claude", "max_tokens": 100, "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]}) as resp:
        got = await resp.read()
    head, _, tail = got.rpartition(b"event: error\n")
    assert head == main.streams[-1].rpartition(b"event: error\n")[0]
    error = orjson.loads(tail.removeprefix(b"data: ").strip())
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    rows = await ledger(gw)
    assert rows[-1][3] > 0  # the input billed so far is recorded


async def test_fallback_across_wire_formats_gives_one_clean_stream(fakes, client):
    main, _, openai_fake = fakes
    main.script(Reply(status=529))
    openai_fake.script(OpenAIReply(text="from gpt"))
    async with client.messages.stream(model="claude-or-gpt", max_tokens=100,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "from gpt" and final.stop_reason == "end_turn"
    assert openai_fake.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]


async def test_count_tokens_is_exact_from_anthropic(fakes, client):
    main = fakes[0]
    count = await client.messages.count_tokens(
        model="claude", system="Be brief.", tools=TOOLS,
        messages=[{"role": "user", "content": "How many tokens is this?"}])
    sent = main.requests[-1]
    assert sent.body["model"] == "claude-sonnet-4-5-20250929" and "max_tokens" not in sent.body
    assert count.input_tokens > 0 and not (count.model_extra or {}).get("estimated")


async def test_count_tokens_passes_the_upstreams_client_errors_on(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.count_tokens(model="claude", messages=[
            {"role": "user", "content": [{"type": "text", "text": ""}]}])
    assert "non-empty" in err.value.body["error"]["message"]


async def test_count_tokens_estimates_when_anthropic_fails(fakes, client):
    fakes[0].script(Reply(status=500))
    count = await client.messages.count_tokens(
        model="claude", messages=[{"role": "user", "content": "x" * 400}])
    assert count.model_extra["estimated"] is True and 100 <= count.input_tokens < 130
