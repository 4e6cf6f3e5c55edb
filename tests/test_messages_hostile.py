"""/v1/messages attacked: cut upstream streams, upstream errors before and after
the first event, clients that walk away, odd bodies, many clients at once."""

from __future__ import annotations

import asyncio
import sqlite3

import aiohttp
import anthropic
import orjson
import pytest

from proxy.server.gateway import GATEWAY
from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, Reply
from tests.fakes.faults import Faults
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.server import LoopbackServer

HI = [{"role": "user", "content": "one two three four five six"}]


@pytest.fixture
async def fakes():
    main, backup, openai_fake = FakeAnthropic(), FakeAnthropic(), FakeOpenAI()
    main.faults = Faults(paths=("/v1/messages",)).attach(main.app)
    async with LoopbackServer(main.app) as a, LoopbackServer(backup.app) as b, \
            LoopbackServer(openai_fake.app, handler_cancellation=True) as o:
        main.url, backup.url, openai_fake.url = a.url, b.url, o.url
        yield main, backup, openai_fake


@pytest.fixture
async def gw(fakes, start_gateway, tmp_path):
    main, backup, openai_fake = fakes
    return await start_gateway(f"""
        providers:
          anthropic: {{type: anthropic, base_url: "{main.url}", api_key: {API_KEY}}}
          backup: {{type: anthropic, base_url: "{backup.url}", api_key: {API_KEY}}}
          openai: {{type: openai, base_url: "{openai_fake.url}/v1", api_key: "{OPENAI_KEY}"}}
          slow: {{type: mock, chunk_delay_ms: 100}}
          fast: {{type: mock}}
        models:
          claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
          claude-ha:
            targets: [{{provider: anthropic, model: claude-sonnet-4-5}},
                      {{provider: backup, model: claude-haiku-4-5}}]
          gpt: {{targets: [{{provider: openai, model: gpt-4o}}]}}
          slow: {{targets: [{{provider: slow, model: echo, price: {{input: 1, output: 1}}}}]}}
          echo: {{targets: [{{provider: fast, model: echo}}]}}
        state: {{ledger: "sqlite:{tmp_path / 'l.db'}"}}
    """)


async def raw_stream(gw, model: str, body: dict | None = None) -> tuple[int, list]:
    """(status, [(event name, data)]) of a raw streamed /v1/messages call."""
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/messages", json=body or {"model": model, "max_tokens": 200,
                                                   "stream": True, "messages": HI}) as resp:
        raw = await resp.read()
    if not resp.headers["content-type"].startswith("text/event-stream"):
        return resp.status, [("json", orjson.loads(raw))]
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        name, _, data = block.partition(b"\ndata: ")
        events.append((name.removeprefix(b"event: ").decode(), orjson.loads(data)))
    return resp.status, events


async def rows(gw) -> list[tuple]:
    await gw.app[GATEWAY].budget.ledger.flush()
    return sqlite3.connect(gw.app[GATEWAY].config.state.ledger).execute(
        "SELECT model, http_status, prompt_tokens, completion_tokens, estimated FROM spend "
        "ORDER BY created_at").fetchall()


async def test_a_native_stream_cut_before_content_falls_back(fakes, gw):
    main, backup, _ = fakes
    main.faults.drop_after(2)  # message_start and ping, then the connection is gone
    backup.script(Reply(text="safe"))
    status, events = await raw_stream(gw, "claude-ha")
    assert status == 200 and events[-1][0] == "message_stop"
    assert "".join(e[1]["delta"].get("text", "") for e in events
                   if e[0] == "content_block_delta") == "safe"


async def test_a_native_stream_cut_after_content_ends_with_an_error_and_is_billed(fakes, gw):
    fakes[0].faults.drop_after(5)
    status, events = await raw_stream(gw, "claude")
    assert status == 200 and [e[0] for e in events][:3] == ["message_start", "ping",
                                                            "content_block_start"]
    name, error = events[-1]
    assert name == "error" and error["error"]["type"] == "api_error"
    assert "cut short" in error["error"]["message"]
    (model, http_status, prompt, completion, estimated), = await rows(gw)
    assert (model, estimated) == ("claude", 1) and prompt > 0 and completion >= 1


@pytest.mark.parametrize("status,seen,kind", [(500, 500, "api_error"),
                                              (503, 529, "overloaded_error"),
                                              (429, 429, "rate_limit_error")])
async def test_translated_upstream_errors_before_the_first_event(fakes, gw, status, seen, kind):
    fakes[2].script(OpenAIReply(status=status, headers={"retry-after": "3"}))
    got, events = await raw_stream(gw, "gpt")
    assert got == seen and events[0][1]["error"]["type"] == kind
    assert (await rows(gw))[-1][1] == seen  # the ledger records what the client saw


async def test_translated_stream_cut_or_failing_after_content(fakes, gw):
    openai_fake = fakes[2]
    openai_fake.script(OpenAIReply(text="a b c d e f", drop_after=3))
    status, events = await raw_stream(gw, "gpt")
    assert status == 200 and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert not any(name == "message_stop" for name, _ in events)
    error = b'data: {"error": {"message": "Overloaded", "type": "server_error", "code": null}}\n\n'
    openai_fake.script(OpenAIReply(text="a b c d e f", inject={3: error}))
    status, events = await raw_stream(gw, "gpt")
    assert events[-1] == ("error", {"type": "error", "request_id": events[-1][1]["request_id"],
                                    "error": {"type": "api_error", "message": "Overloaded"}})


async def test_a_client_that_walks_away_mid_stream_is_billed(gw):
    words = " ".join(f"w{i}" for i in range(30))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/messages", json={"model": "slow", "max_tokens": 100, "stream": True,
                                           "messages": [{"role": "user", "content": words}]
                                           }) as resp:
        async for line in resp.content:
            if b"text_delta" in line:
                break  # one word in, the client leaves
        resp.close()
    for _ in range(100):
        found = await rows(gw)
        if found and found[0][1] is not None:  # the row is settled
            break
        await asyncio.sleep(0.02)
    (_, status, prompt, completion, estimated), = found
    assert status == 499 and estimated == 1 and prompt > 0 and 1 <= completion < 30


ODD = [
    {"system": {"type": "text"}}, {"system": [{"type": "image"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "\u0000\ud7ff" * 50}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": 7}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "!!notbase64"}}]}]},
    {"messages": [{"role": "user", "content": [[[]]]}]},
    {"tools": [{"name": "x" * 500, "input_schema": {"type": "object"}}]},
    {"tools": "all"}, {"tool_choice": {"type": "tool"}}, {"thinking": {"type": "enabled",
                                                                       "budget_tokens": -5}},
    {"stop_sequences": [1, 2]}, {"temperature": "hot"}, {"top_k": 1.5}, {"metadata": []},
    {"output_config": {"format": {"type": "json_schema", "schema": []}}},
    {"messages": [{"role": "user", "content": "x"}] * 3, "max_tokens": 1},
    {"container": {"id": "c"}}, {"mystery": 1},
]


@pytest.mark.parametrize("odd", ODD)
async def test_odd_bodies_never_reach_a_500(gw, odd):
    body = {"model": "echo", "max_tokens": 20, "messages": HI, **odd}
    async with aiohttp.ClientSession() as http, http.post(gw.url + "/v1/messages",
                                                          json=body) as resp:
        answer = await resp.json()
    assert resp.status in (200, 400), answer
    assert answer["type"] == ("message" if resp.status == 200 else "error")


async def test_many_clients_at_once(gw):
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0) as c:
        async def one(i: int) -> str:
            async with c.messages.stream(model="echo", max_tokens=50, messages=[
                    {"role": "user", "content": f"client {i} here"}]) as stream:
                return (await stream.get_final_message()).content[0].text
        answers = await asyncio.gather(*(one(i) for i in range(60)))
    assert answers == [f"client {i} here" for i in range(60)]


@pytest.mark.parametrize("status,kind", [(429, "rate_limit_error"), (529, "overloaded_error"),
                                         (500, "api_error")])
async def test_native_errors_before_and_after_the_first_event(fakes, gw, status, kind):
    main = fakes[0]
    main.script(Reply(status=status, headers={"retry-after": "2"}))
    got, events = await raw_stream(gw, "claude")
    assert got == status and events[0][1]["error"]["type"] == kind
    main.script(Reply(text="a b c d e f", error_after=5, error_delay=0.02,
                      error={"type": kind, "message": f"late {kind}"}))
    got, events = await raw_stream(gw, "claude")
    assert got == 200 and events[-1][0] == "error"
    assert events[-1][1]["error"] == {"type": kind, "message": f"late {kind}"}
    assert [e[0] for e in events[:3]] == ["message_start", "ping", "content_block_start"]
