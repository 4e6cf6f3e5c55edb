"""The Responses API under attack: cut streams, upstream errors before and after
the first event, clients that walk away, odd paths and queries, many clients
at once, limits and budgets, and the cache."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from proxy.server.gateway import GATEWAY
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.responses_grammar import check_stream
from tests.fakes.server import LoopbackServer

KEY, TIGHT = "hostile-key-0123456789ab", "tight-key-0123456789abcd"


@pytest.fixture
async def claude():
    fake = FakeAnthropic()
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def chat():
    fake = FakeOpenAI()
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def gw(claude, chat, start_gateway, tmp_path):
    return await start_gateway(f"""
        providers:
          anthropic: {{type: anthropic, base_url: "{claude.url}", api_key: {ANTHROPIC_KEY}}}
          compat: {{type: openai, base_url: "{chat.url}/v1", api_key: {OPENAI_KEY}}}
          offline: {{type: mock, chunk_delay_ms: 30}}
        models:
          claude:
            targets: [{{provider: anthropic, model: claude-sonnet-4-5,
                        price: {{input: 1.0, output: 2.0}}}}]
          slow: {{targets: [{{provider: offline, model: echo,
                              price: {{input: 1.0, output: 2.0}}}}]}}
          cached: {{cache: true, targets: [{{provider: offline, model: echo}}]}}
          compat: {{targets: [{{provider: compat, model: gpt-4o}}]}}
        keys:
          - {{name: team, key: "{KEY}"}}
          - {{name: tight, key: "{TIGHT}", rpm: 1, budget: {{usd: 0.000001, per: day}}}}
        policies: {{retry: {{attempts: 0}}}}
        state: {{ledger: "sqlite:{tmp_path}/ledger.db"}}
    """)


async def _post(gw, body: dict, key: str = KEY) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
            json=body) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_upstream_error_event_after_the_first_text_ends_with_failed(gw, claude):
    claude.script(Reply(text="one two three four five six", error_after=6, error_delay=0.05))
    status, _, raw = await _post(gw, {"model": "claude", "input": "go", "stream": True})
    assert status == 200
    events = check_stream(raw)
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["code"] == "server_error"
    message = failed["response"]["output"][0]
    assert message["status"] == "incomplete" and message["content"][0]["text"].startswith("one")


async def test_a_chat_upstream_cut_mid_stream_ends_with_failed(gw, chat):
    chat.script(OpenAIReply(text="one two three four five six seven", drop_after=4))
    status, _, raw = await _post(gw, {"model": "compat", "input": "go", "stream": True})
    assert status == 200
    events = check_stream(raw)
    assert events[-1]["type"] == "response.failed"
    assert "cut short" in events[-1]["response"]["error"]["message"]
    assert chat.requests[-1].body["messages"] == [{"role": "user", "content": "go"}]


@pytest.mark.parametrize("status,code", [(429, "rate_limit_error"), (500, "api_error"),
                                         (529, "overloaded_error")])
async def test_upstream_error_before_the_first_event_is_an_http_error(gw, claude, status, code):
    claude.script(Reply(status=status, error_type=code, message="nope"))
    got, headers, raw = await _post(gw, {"model": "claude", "input": "go", "stream": True})
    assert got == {429: 429, 500: 502, 529: 503}[status]  # as chat answers them
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


async def test_an_error_event_before_any_text_is_an_http_error(gw, claude):
    claude.script(Reply(text="hello", error_after=1))
    status, _, raw = await _post(gw, {"model": "claude", "input": "go", "stream": True})
    assert status == 503 and "error" in orjson.loads(raw)


async def test_a_client_that_walks_away_is_still_billed(gw):
    words = " ".join(f"w{i}" for i in range(30))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
            json={"model": "slow", "input": words, "stream": True}) as resp:
        async for line in resp.content:
            if b"response.output_text.delta" in line:
                break
        resp.close()
    budget = gw.app[GATEWAY].budget
    rows = []
    for _ in range(100):
        await budget.ledger.flush()
        rows = sqlite3.connect(gw.app[GATEWAY].config.state.ledger).execute(
            "SELECT state, http_status, completion_tokens, estimated FROM spend").fetchall()
        if rows and rows[0][0] == "done":
            break
        await asyncio.sleep(0.02)
    (state, status, completion, estimated), = rows
    assert (state, status, estimated) == ("done", 499, 1) and completion >= 1


async def test_limits_and_budgets_answer_before_anything_streams(gw):
    status, headers, raw = await _post(gw, {"model": "slow", "input": "x" * 4000,
                                            "stream": True}, key=TIGHT)
    assert status == 429 and orjson.loads(raw)["error"]["code"] == "budget_exceeded"
    status, _, raw = await _post(gw, {"model": "slow", "input": "x"}, key=TIGHT)
    assert status == 429


async def test_the_cache_answers_a_repeated_request_as_a_new_response(gw):
    body = {"model": "cached", "input": "cache me"}
    first_status, first_headers, first = await _post(gw, body)
    second_status, second_headers, second = await _post(gw, body)
    assert (first_status, second_status) == (200, 200)
    assert (first_headers["x-gatewise-cache"], second_headers["x-gatewise-cache"]) == (
        "MISS", "HIT")
    one, two = orjson.loads(first), orjson.loads(second)
    assert one["id"] != two["id"] and two["output"][0]["content"][0]["text"] == "cache me"
    _, _, streamed = await _post(gw, {**body, "stream": True})  # never a chat replay
    assert check_stream(streamed)[-1]["type"] == "response.completed"


@pytest.mark.parametrize("method,path,query,status", [
    ("GET", "/v1/responses/" + "a" * 200, "", 404),
    ("GET", "/v1/responses/resp%20with%20space", "", 404),
    ("GET", "/v1/responses/..%2F..%2Fetc", "", 404),
    ("GET", "/v1/responses/resp_nope/input_items", "?limit=abc", 400),
    ("GET", "/v1/responses/resp_nope/input_items", "?limit=101", 400),
    ("GET", "/v1/responses/resp_nope/input_items", "?limit=1_0", 400),
    ("GET", "/v1/responses/resp_nope/input_items", "?order=sideways", 400),
    ("GET", "/v1/responses/resp_nope/input_items", "", 404),
    ("DELETE", "/v1/responses/resp_nope", "", 404),
    ("POST", "/v1/responses/resp_nope/cancel", "", 404),
    ("PUT", "/v1/responses", "", 405),
])
async def test_odd_paths_and_queries(gw, method, path, query, status):
    async with aiohttp.ClientSession() as http, http.request(
            method, gw.url + path + query, headers={"authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
        assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b'"text"', b"null"])
async def test_bodies_that_are_not_objects(gw, data):
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", data=data, headers={
                "authorization": f"Bearer {KEY}", "content-type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_many_clients_continue_their_own_conversations(gw):
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as c:
        async def talk(n: int) -> tuple[str, int]:
            first = await c.responses.create(model="slow", input=f"first {n}")
            async with c.responses.stream(model="slow", input=f"second {n}",
                                          previous_response_id=first.id) as s:
                second = await s.get_final_response()
            third = await c.responses.create(model="slow", input=f"third {n}",
                                             previous_response_id=second.id)
            items = await c.responses.input_items.list(third.id)
            return items.data[0].content[0].text, third.usage.input_tokens

        results = await asyncio.gather(*(talk(n) for n in range(24)))
    assert [text for text, _ in results] == [f"third {n}" for n in range(24)]
    assert all(tokens > 20 for _, tokens in results)  # each saw its own history


async def test_a_native_error_event_in_another_shape_is_an_error_not_content(start_gateway):
    """Compatible servers may send `event: error` with `{"error": {...}}` (chat's shape)
    instead of OpenAI's typed event: it is still the upstream's failure, classified and
    redacted, never relayed to the client as if it were one of the stream's events."""
    from aiohttp import web

    secret = "sk-compat-SECRET-0123456789"

    async def respond(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        created = {"id": "resp_1", "object": "response", "status": "in_progress",
                   "output": []}
        for seq, (kind, extra) in enumerate([
                ("response.created", {"response": created}),
                ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0,
                                                "content_index": 0, "delta": "Hi"})]):
            await resp.write(f"event: {kind}\ndata: ".encode() + orjson.dumps(
                {"type": kind, "sequence_number": seq, **extra}) + b"\n\n")
        await resp.write(b"event: error\ndata: " + orjson.dumps({"error": {
            "message": f"quota exceeded for {secret}", "code": "rate_limit_exceeded"}})
            + b"\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/responses", respond)
    async with LoopbackServer(app) as up:
        gw = await start_gateway(f"""
            providers: {{up: {{type: openai, base_url: "{up.url}/v1", api_key: {secret},
                              responses: native}}}}
            models: {{m: {{targets: [{{provider: up, model: m}}]}}}}
        """)
        async with aiohttp.ClientSession() as http, http.post(
                gw.url + "/v1/responses", json={"model": "m", "input": "hi",
                                                "stream": True}) as resp:
            raw = await resp.read()
    assert secret.encode() not in raw
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: response.failed\n")
    failed = orjson.loads(last.split(b"data: ", 1)[1])["response"]
    assert failed["error"]["code"] == "rate_limit_exceeded"
    assert raw.count(b"event: ") == 3  # created, the delta, failed: nothing else relayed


async def test_a_native_event_spread_over_several_data_lines_reaches_the_client_whole(
        start_gateway):
    """SSE lets an event's data span several `data:` lines (joined by newlines); relayed
    as one `data:` field it would break the client's framing, so it goes out on one line,
    and a `type` holding a newline cannot add lines of its own."""
    from aiohttp import web

    async def respond(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        created = {"id": "resp_1", "object": "response", "status": "in_progress",
                   "output": [], "model": "m", "created_at": 1}
        done = {**created, "status": "completed", "output": [], "usage": None}
        await resp.write(b'event: response.created\ndata: {"type":"response.created",\n'
                         b'data: "sequence_number":0,"response":' + orjson.dumps(created)
                         + b'}\n\n')
        await resp.write(b'data: {"sequence_number":1,"type":"x\\ndata: {}",'
                         b'"delta":"hi","item_id":"m","output_index":0,"content_index":0}\n\n')
        await resp.write(b'data: {"sequence_number":2,"type":"response.completed",'
                         b'"response":' + orjson.dumps(done) + b'}\n\n')
        return resp

    app = web.Application()
    app.router.add_post("/v1/responses", respond)
    async with LoopbackServer(app) as up:
        gw = await start_gateway(f"""
            providers: {{up: {{type: openai, base_url: "{up.url}/v1", responses: native}}}}
            models: {{m: {{targets: [{{provider: up, model: m}}]}}}}
        """)
        async with aiohttp.ClientSession() as http, http.post(
                gw.url + "/v1/responses", json={"model": "m", "input": "hi",
                                                "stream": True}) as resp:
            raw = await resp.read()
    frames = raw.strip().split(b"\n\n")
    assert len(frames) == 3
    for frame in frames:
        lines = frame.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") \
            and lines[1].startswith(b"data: ")
        orjson.loads(lines[1][6:])
