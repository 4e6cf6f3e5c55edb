"""The Responses API translated: the official `openai` SDK → gatewise → faithful
fakes of Anthropic's Messages API and Gemini's generateContent, plus the native
fake for conversations that cross from one upstream to another."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AReply
from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.gemini_upstream import Reply as GReply
from tests.fakes.responses_grammar import check_stream
from tests.fakes.responses_upstream import API_KEY as OPENAI_KEY
from tests.fakes.responses_upstream import FakeResponses
from tests.fakes.responses_upstream import Reply as OReply
from tests.fakes.server import LoopbackServer

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]


@pytest.fixture
async def fakes():
    claude, gemini, native = FakeAnthropic(), FakeGemini(), FakeResponses()
    async with LoopbackServer(claude.app) as a, LoopbackServer(gemini.app) as g, \
            LoopbackServer(native.app) as o:
        claude.url, gemini.url, native.url = a.url, g.url, o.url
        yield claude, gemini, native


@pytest.fixture
async def gw(fakes, start_gateway):
    claude, gemini, native = fakes
    return await start_gateway(f"""
        providers:
          anthropic: {{type: anthropic, base_url: "{claude.url}", api_key: {ANTHROPIC_KEY}}}
          google: {{type: gemini, base_url: "{gemini.url}", api_key: {GEMINI_KEY}}}
          openai: {{type: openai, base_url: "{native.url}/v1", api_key: {OPENAI_KEY},
                    responses: native}}
        models:
          claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
          gemini: {{targets: [{{provider: google, model: gemini-2.5-flash}}]}}
          gpt: {{targets: [{{provider: openai, model: gpt-4.1}}]}}
        keys: [{{name: alice, key: "{ALICE}"}}, {{name: bob, key: "{BOB}"}}]
    """)


@pytest.fixture
async def alice(gw):
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=ALICE, max_retries=0) as c:
        yield c


@pytest.fixture
async def bob(gw):
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=BOB, max_retries=0) as c:
        yield c


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_create_plain(fakes, alice, model):
    claude, gemini, _ = fakes
    (claude if model == "claude" else gemini).script(
        AReply(text="Bonjour.") if model == "claude" else GReply(text="Bonjour."))
    reply = await alice.responses.create(model=model, input="Say hi in French.",
                                         instructions="Be brief.", max_output_tokens=64,
                                         temperature=0.2, metadata={"ticket": "42"})
    assert reply.object == "response" and reply.status == "completed"
    assert reply.output_text == "Bonjour."
    assert reply.instructions == "Be brief." and reply.metadata == {"ticket": "42"}
    assert reply.usage.input_tokens > 0 and reply.usage.total_tokens == (
        reply.usage.input_tokens + reply.usage.output_tokens)
    if model == "claude":
        sent = claude.last
        assert sent["system"] == [{"type": "text", "text": "Be brief."}]
        assert sent["max_tokens"] == 64 and sent["temperature"] == 0.2
        assert sent["messages"] == [{"role": "user", "content": [
            {"type": "text", "text": "Say hi in French."}]}] or sent["messages"] == [
            {"role": "user", "content": "Say hi in French."}]
    else:
        sent = gemini.last
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"]["maxOutputTokens"] == 64


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_stream_helper_with_reasoning(fakes, alice, model):
    claude, gemini, _ = fakes
    if model == "claude":
        claude.script(AReply(text="The answer is 4.", thinking="Two plus two is four."))
        extra = {"reasoning": {"effort": "low"}, "max_output_tokens": 4096}
    else:
        gemini.script(GReply(text="The answer is 4.", thought="Two plus two is four."))
        extra = {"reasoning": {"effort": "low"}}
    async with alice.responses.stream(model=model, input="2+2?", **extra) as s:
        kinds = [event.type async for event in s]
        final = await s.get_final_response()
    assert final.output_text == "The answer is 4."
    assert final.output[0].type == "reasoning"
    assert final.output[0].summary[0].text == "Two plus two is four."
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds[-1] == "response.completed" and final.status == "completed"


async def test_raw_translated_stream_grammar(fakes, gw):
    claude, _, _ = fakes
    claude.script(AReply(text="Let me check both.", split=7, tool_calls=[
        {"name": "get_weather", "input": {"city": "Paris"}},
        {"name": "get_weather", "input": {"city": "Tokyo"}}]))
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", headers={"authorization": f"Bearer {ALICE}"},
            json={"model": "claude", "input": "Paris and Tokyo?", "tools": TOOLS,
                  "stream": True}) as resp:
        assert resp.status == 200
        raw = await resp.read()
    events = check_stream(raw)
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call",
                                                    "function_call"]
    assert [i["arguments"] for i in final["output"][1:]] == ['{"city":"Paris"}',
                                                             '{"city":"Tokyo"}']
    assert all(i["call_id"].startswith("toolu_") for i in final["output"][1:])


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_function_tool_round_trip(fakes, alice, model):
    claude, gemini, _ = fakes
    if model == "claude":
        claude.script(AReply(text="", tool_calls=[{"name": "get_weather",
                                                   "input": {"city": "Paris"}}]),
                      AReply(text="It is sunny in Paris."))
    else:
        gemini.script(GReply(text="", tool_calls=[{"name": "get_weather",
                                                   "args": {"city": "Paris"}}]),
                      GReply(text="It is sunny in Paris."))
    first = await alice.responses.create(model=model, input="Weather in Paris?", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments.replace(" ", "") == '{"city":"Paris"}'
    second = await alice.responses.create(
        model=model, tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "sunny, 24C"}])
    assert second.output_text == "It is sunny in Paris."
    assert second.previous_response_id == first.id
    if model == "claude":
        turns = claude.last["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant", "user"]
        assert turns[2]["content"][0]["type"] == "tool_result"
        assert turns[2]["content"][0]["tool_use_id"] == calls[0].call_id
    else:
        turns = gemini.last["contents"]
        assert [t["role"] for t in turns] == ["user", "model", "user"]
        assert turns[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


async def test_previous_response_id_across_three_upstreams(fakes, alice):
    claude, gemini, native = fakes
    claude.script(AReply(text="My name is Claude."))
    gemini.script(GReply(text="You asked my name."))
    native.script(OReply(text="Two turns so far."))
    one = await alice.responses.create(model="claude", input="What is your name?")
    two = await alice.responses.create(model="gemini", input="What did I ask?",
                                       previous_response_id=one.id)
    turns = gemini.last["contents"]
    assert [t["role"] for t in turns] == ["user", "model", "user"]
    assert turns[1]["parts"][0]["text"] == "My name is Claude."
    three = await alice.responses.create(model="gpt", input="How many turns?",
                                         previous_response_id=two.id, instructions="Count.")
    assert three.output_text == "Two turns so far."
    sent = native.last
    assert sent["instructions"] == "Count." and "previous_response_id" not in sent
    assert [(m.get("role"), m["content"] if isinstance(m["content"], str) else
             m["content"][0]["text"]) for m in sent["input"][:-1]] == [
        ("user", "What is your name?"), ("assistant", "My name is Claude."),
        ("user", "What did I ask?"), ("assistant", "You asked my name.")]
    assert sent["input"][-1] == "How many turns?" or sent["input"][-1] == {
        "role": "user", "content": "How many turns?"}


async def test_retrieve_input_items_delete(fakes, alice):
    claude, _, _ = fakes
    claude.script(AReply(text="Stored."))
    reply = await alice.responses.create(model="claude", input=[
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "input_text", "text": "Ready?"}]}])
    got = await alice.responses.retrieve(reply.id)
    assert got.model_dump() == reply.model_dump()
    page = await alice.responses.input_items.list(reply.id)
    assert [(i.role, i.content[0].text) for i in page.data] == [
        ("user", "Ready?"), ("developer", "Answer in one word.")]  # newest first
    asc = await alice.responses.input_items.list(reply.id, order="asc", limit=1)
    assert [i.role for i in asc.data] == ["developer"] and asc.has_more
    rest = await alice.responses.input_items.list(reply.id, order="asc", after=asc.data[0].id)
    assert [i.role for i in rest.data] == ["user"] and not rest.has_more
    await alice.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError) as info:
        await alice.responses.retrieve(reply.id)
    assert info.value.body["message"] == f"Response with id '{reply.id}' not found."
    with pytest.raises(openai.NotFoundError):
        await alice.responses.delete(reply.id)


async def test_store_false_is_not_kept(fakes, alice):
    reply = await alice.responses.create(model="claude", input="hi", store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        await alice.responses.retrieve(reply.id)
    with pytest.raises(openai.BadRequestError) as info:
        await alice.responses.create(model="claude", input="again",
                                     previous_response_id=reply.id)
    assert info.value.body["code"] == "previous_response_not_found"


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_parse_with_a_pydantic_model(fakes, alice, model):
    claude, gemini, _ = fakes
    answer = '{"city": "Paris", "celsius": 24}'
    (claude if model == "claude" else gemini).script(
        AReply(text=answer) if model == "claude" else GReply(text=answer))
    parsed = await alice.responses.parse(model=model, input="Weather in Paris?",
                                         text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", celsius=24)
    assert parsed.text.format.type == "json_schema" and parsed.text.format.name == "Weather"
    if model == "claude":
        fmt = claude.last["output_config"]["format"]
        assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["city", "celsius"]
    else:
        config = gemini.last["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseJsonSchema"]["properties"]["celsius"] == {
            "title": "Celsius", "type": "integer"}


async def test_a_key_cannot_read_or_continue_another_keys_response(fakes, alice, bob):
    reply = await alice.responses.create(model="claude", input="Alice's secret.")
    for call in (bob.responses.retrieve(reply.id), bob.responses.delete(reply.id),
                 bob.responses.input_items.list(reply.id)):
        with pytest.raises(openai.NotFoundError) as info:
            await call
        assert info.value.body["message"] == f"Response with id '{reply.id}' not found."
    with pytest.raises(openai.BadRequestError) as info:
        await bob.responses.create(model="claude", input="What did Alice say?",
                                   previous_response_id=reply.id)
    assert info.value.body == {
        "message": f"Previous response with id '{reply.id}' not found.",
        "type": "invalid_request_error", "param": "previous_response_id",
        "code": "previous_response_not_found"}
    assert (await alice.responses.retrieve(reply.id)).id == reply.id  # still Alice's


async def test_an_unknown_key_gets_401_before_the_store(gw):
    async with aiohttp.ClientSession() as http, http.get(
            gw.url + "/v1/responses/resp_123", headers={"authorization": "Bearer nope"}) as r:
        assert r.status == 401


async def test_client_kept_history_with_translated_reasoning_goes_native(fakes, alice):
    """A client (the Agents SDK does this) that sends back every output item: the
    reasoning item gatewise made from Claude's thinking cannot go to OpenAI."""
    claude, _, native = fakes
    claude.script(AReply(text="Four.", thinking="Two and two."))
    first = await alice.responses.create(model="claude", input="2+2?",
                                         reasoning={"effort": "low"}, max_output_tokens=4096)
    assert [i.type for i in first.output] == ["reasoning", "message"]
    history = [{"role": "user", "content": "2+2?"}] + [
        i.model_dump(exclude_none=True) for i in first.output]
    second = await alice.responses.create(model="gpt", input=history + [
        {"role": "user", "content": "And 3+3?"}])
    assert second.output_text
    assert [i.get("type", "message") for i in native.last["input"]] == [
        "message", "message", "message"]
