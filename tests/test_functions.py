"""Legacy function calling (`functions` / `function_call`) round trips through gatewise:
tools go upstream, the answer comes back as `message.function_call`, streaming too."""

import aiohttp
import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AReply
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer

FUNCTIONS = [{"name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CALL = [{"id": "call_abc", "name": "get_weather", "arguments": '{"city":"Paris"}'}]


@pytest.fixture
async def env(start_gateway):
    oai, ant = FakeOpenAI(), FakeAnthropic()
    async with LoopbackServer(oai.app) as s1, LoopbackServer(ant.app) as s2:
        gw = await start_gateway(f"""
            providers:
              openai: {{type: openai, base_url: "{s1.url}/v1", api_key: {OPENAI_KEY}}}
              anthropic: {{type: anthropic, base_url: "{s2.url}", api_key: {ANTHROPIC_KEY}}}
            models:
              gpt: {{targets: [{{provider: openai, model: gpt-4o-mini}}]}}
              claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
        """)
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        yield {"gw": gw, "client": client, "openai": oai, "anthropic": ant}


async def test_round_trip_non_streaming(env):
    client, fake = env["client"], env["openai"]
    fake.script(Reply(tool_calls=CALL), Reply(text="Sunny in Paris."))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(model="gpt", messages=messages,
                                                 functions=FUNCTIONS,
                                                 function_call={"name": "get_weather"})
    sent = fake.requests[-1].body
    assert "functions" not in sent and "function_call" not in sent
    assert sent["tools"] == [{"type": "function", "function": FUNCTIONS[0]}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    choice = first.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    assert (choice.message.function_call.name, choice.message.function_call.arguments) == (
        "get_weather", '{"city":"Paris"}')
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "function", "name": "get_weather", "content": "sunny, 24C"}]
    second = await client.chat.completions.create(model="gpt", messages=messages,
                                                  functions=FUNCTIONS)
    assert second.choices[0].message.content == "Sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    history = fake.requests[-1].body["messages"]
    call_id = history[1]["tool_calls"][0]["id"]
    assert history[1]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                       "arguments": '{"city":"Paris"}'}
    assert history[2] == {"role": "tool", "tool_call_id": call_id, "content": "sunny, 24C"}


async def test_streaming_function_call_deltas(env):
    client, fake = env["client"], env["openai"]
    fake.script(Reply(tool_calls=CALL))
    stream = await client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "Weather?"}], functions=FUNCTIONS,
        function_call="auto", stream=True)
    name, arguments, finish = "", "", None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        assert delta.tool_calls is None
        if delta.function_call is not None:
            name += delta.function_call.name or ""
            arguments += delta.function_call.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, arguments, finish) == ("get_weather", '{"city":"Paris"}', "function_call")
    assert fake.requests[-1].body["tool_choice"] == "auto"


async def test_raw_stream_bytes(env):
    env["openai"].script(Reply(tool_calls=CALL))
    async with aiohttp.ClientSession() as http:
        async with http.post(env["gw"].url + "/v1/chat/completions", json={
                "model": "gpt", "messages": [{"role": "user", "content": "w"}],
                "functions": FUNCTIONS, "stream": True}) as resp:
            raw = await resp.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1] == {"function_call": {"name": "get_weather", "arguments": ""}}
    assert all("tool_calls" not in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


async def test_anthropic_round_trip(env):
    client, fake = env["client"], env["anthropic"]
    fake.script(AReply(text="", tool_calls=[{"id": "toolu_1", "name": "get_weather",
                                             "input": {"city": "Rome"}}]),
                AReply(text="Warm in Rome."))
    messages = [{"role": "user", "content": "Rome?"}]
    first = await client.chat.completions.create(model="claude", messages=messages,
                                                 functions=FUNCTIONS)
    call = first.choices[0].message.function_call
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Rome"}')
    assert first.choices[0].finish_reason == "function_call"
    assert fake.last["tools"][0]["name"] == "get_weather"
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "function", "name": "get_weather", "content": "30C"}]
    second = await client.chat.completions.create(model="claude", messages=messages,
                                                  functions=FUNCTIONS, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in second if c.choices])
    assert text == "Warm in Rome."
    sent = fake.last["messages"]
    tool_use = next(p for p in sent[1]["content"] if p["type"] == "tool_use")
    assert sent[2]["content"][0]["tool_use_id"] == tool_use["id"]


async def test_invalid_legacy_function_requests(env):
    async with aiohttp.ClientSession() as http:
        for body, param in [
            ({"functions": "nope"}, "functions"),
            ({"functions": FUNCTIONS, "function_call": 3}, "function_call"),
            ({"functions": FUNCTIONS, "tools": [{"type": "function",
                                                 "function": FUNCTIONS[0]}]}, "functions"),
            ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]"),
        ]:
            payload = {"model": "gpt", "messages": [{"role": "user", "content": "x"}], **body}
            async with http.post(env["gw"].url + "/v1/chat/completions", json=payload) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]["param"] == param
    assert env["openai"].requests == []
