"""The Responses API natively: the official `openai` SDK → gatewise → a faithful
fake of OpenAI's `/v1/responses` (tests/fakes/responses_upstream.py), with an
Anthropic fake as the fallback model's upstream."""

from __future__ import annotations

import sqlite3

import aiohttp
import openai
import orjson
import pytest

from proxy.server.gateway import GATEWAY
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AReply
from tests.fakes.responses_grammar import check_stream
from tests.fakes.responses_upstream import API_KEY, FakeResponses, Reply
from tests.fakes.server import LoopbackServer

KEY = "client-key-native-0123456789"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"], "additionalProperties": False},
          "strict": True}]
PRICE = "price: {input: 1.0, output: 2.0}"


@pytest.fixture
async def fakes():
    native, claude = FakeResponses(), FakeAnthropic()
    async with LoopbackServer(native.app) as a, LoopbackServer(claude.app) as b:
        native.url, claude.url = a.url, b.url
        yield native, claude


@pytest.fixture
async def gw(fakes, start_gateway, tmp_path):
    native, claude = fakes
    return await start_gateway(f"""
        providers:
          openai: {{type: openai, base_url: "{native.url}/v1", api_key: {API_KEY},
                    responses: native}}
          claude: {{type: anthropic, base_url: "{claude.url}", api_key: {ANTHROPIC_KEY}}}
        models:
          gpt: {{targets: [{{provider: openai, model: gpt-4.1, {PRICE}}}], fallbacks: [sonnet]}}
          sonnet: {{targets: [{{provider: claude, model: claude-sonnet-4-5, {PRICE}}}]}}
        keys: [{{name: team, key: "{KEY}"}}]
        policies: {{retry: {{attempts: 0}}}}
        state: {{ledger: "sqlite:{tmp_path}/ledger.db"}}
    """)


@pytest.fixture
async def client(gw):
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


async def _ledger(gw) -> list[tuple]:
    await gw.app[GATEWAY].budget.ledger.flush()
    conn = sqlite3.connect(gw.app[GATEWAY].config.state.ledger)
    return conn.execute("SELECT model, target, http_status, prompt_tokens, completion_tokens, "
                        "cost, stream FROM spend ORDER BY created_at").fetchall()


async def test_plain_create_passes_the_upstreams_answer_and_bills_its_usage(fakes, gw, client):
    native, _ = fakes
    native.script(Reply(text="Native hello.", usage={"input_tokens": 40, "output_tokens": 7,
                                                     "total_tokens": 47}))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
            json={"model": "gpt", "input": "hi", "instructions": "Be brief.",
                  "fallbacks": ["sonnet"], "metadata": {"k": "v"}}) as resp:
        assert resp.status == 200
        raw = await resp.read()
        assert resp.headers["x-gatewise-target"] == "openai/gpt-4.1"
        assert float(resp.headers["x-gatewise-cost"]) == pytest.approx((40 + 14) / 1e6)
    body = orjson.loads(raw)
    assert body["model"] == "gpt-4.1-2025-04-14"  # the upstream's own answer, untouched
    assert body["output"][0]["content"][0]["text"] == "Native hello."
    sent = native.last
    assert sent == {"model": "gpt-4.1", "input": "hi", "instructions": "Be brief.",
                    "metadata": {"k": "v"}}  # as the client sent it, for the target's model
    assert native.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"
    assert await _ledger(gw) == [("gpt", "openai/gpt-4.1", 200, 40, 7,
                                  pytest.approx(54 / 1e6), 0)]
    again = await client.responses.retrieve(body["id"])
    assert again.output_text == "Native hello." and again.usage.input_tokens == 40


async def test_stream_helper_assembles_the_relayed_events(fakes, gw, client):
    native, _ = fakes
    native.script(Reply(text="Streaming natively works.", reasoning="Think first."))
    async with client.responses.stream(model="gpt", input="go",
                                       reasoning={"effort": "low", "summary": "auto"}) as s:
        kinds = [event.type async for event in s]
        final = await s.get_final_response()
    assert final.output_text == "Streaming natively works."
    assert final.output[0].type == "reasoning"
    assert final.output[0].summary[0].text == "Think first."
    assert final.usage.output_tokens_details.reasoning_tokens == 2
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    rows = await _ledger(gw)
    assert rows[-1][2:5] == (200, final.usage.input_tokens, final.usage.output_tokens)
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text


async def test_raw_stream_is_the_upstreams_grammar_byte_for_byte(fakes, gw):
    native, _ = fakes
    native.script(Reply(calls=[{"name": "get_weather", "arguments": '{"city":"Paris"}'}]))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
            json={"model": "gpt", "input": "weather?", "tools": TOOLS, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = await resp.read()
    events = check_stream(raw)
    assert [e["type"] for e in events][-4:] == [
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert b"[DONE]" not in raw


async def test_function_tool_round_trip(fakes, client):
    native, _ = fakes
    native.script(Reply(calls=[{"name": "get_weather", "arguments": '{"city":"Paris"}',
                                "call_id": "call_abc"}]),
                  Reply(text="Sunny in Paris."))
    first = await client.responses.create(model="gpt", input="Weather in Paris?", tools=TOOLS)
    call = first.output[0]
    assert (call.type, call.name, call.call_id) == ("function_call", "get_weather", "call_abc")
    second = await client.responses.create(
        model="gpt", tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": '{"temp": 24}'}])
    assert second.output_text == "Sunny in Paris."
    sent = native.last
    assert "previous_response_id" not in sent  # the gateway's chain, sent as input
    assert sent["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "function_call", "call_id": "call_abc", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_abc", "output": '{"temp": 24}'}]


@pytest.mark.parametrize("status", [429, 500])
async def test_upstream_error_before_the_first_event_falls_back(fakes, gw, client, status):
    native, claude = fakes
    native.script(Reply(status=status, headers={"retry-after": "0"}))
    claude.script(AReply(text="Claude answers instead."))
    async with client.responses.stream(model="gpt", input="hello") as s:
        final = await s.get_final_response()
    assert final.output_text == "Claude answers instead."
    assert final.model == "claude-sonnet-4-5"
    reply = await client.responses.create(model="gpt", input="again")  # JSON as well
    assert reply.output_text  # the fake's default reply


@pytest.mark.parametrize("how,code", [("fail", "server_error"), ("error", "server_error"),
                                      ("cut", "server_error"),
                                      ("limited", "rate_limit_exceeded")])
async def test_failure_after_the_first_event_ends_with_response_failed(fakes, gw, how, code):
    native, _ = fakes
    words = " ".join(f"w{i}" for i in range(30))
    after = 8  # created, in_progress, item added, part added, then deltas
    native.script(Reply(text=words, failure_code=code,
                        **{"fail": {"fail_after": after}, "error": {"error_after": after},
                           "cut": {"drop_after": after},
                           "limited": {"error_after": after}}[how]))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
            json={"model": "gpt", "input": "count", "stream": True}) as resp:
        assert resp.status == 200
        raw = await resp.read()
    events = check_stream(raw)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["sequence_number"] == after
    assert events[-1]["response"]["error"]["code"] == code
    rows = await _ledger(gw)
    assert rows[-1][2] == 200 and rows[-1][4] > 0  # the partial answer is still billed


async def test_upstream_bad_request_is_the_clients_400(fakes, client):
    native, _ = fakes
    native.script(Reply(status=400, body={"error": {
        "message": "Invalid 'input[0].content'.", "type": "invalid_request_error",
        "param": "input[0].content", "code": "invalid_value"}}))
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt", input="x")
    assert info.value.body["param"] == "input[0].content"


async def test_built_in_tools_go_to_native_upstreams_only(fakes, client):
    native, _ = fakes
    web = [{"type": "web_search"}]
    reply = await client.responses.create(model="gpt", input="news?", tools=web)
    assert reply.output_text and native.last["tools"] == web
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="sonnet", input="news?", tools=web)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "tools[0]"
    assert info.value.body["code"] == "unsupported_tool"
    assert "'web_search'" in info.value.body["message"] and "claude" in info.value.body["message"]
