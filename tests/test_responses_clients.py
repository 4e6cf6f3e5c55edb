"""Client libraries that speak the Responses API, pointed at gatewise: LangChain's
`ChatOpenAI(use_responses_api=True)` and the OpenAI Agents SDK. Each test is
skipped when its library is not installed (both are in the `test` extra)."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AReply
from tests.fakes.responses_upstream import API_KEY as OPENAI_KEY
from tests.fakes.responses_upstream import FakeResponses
from tests.fakes.responses_upstream import Reply as OReply
from tests.fakes.server import LoopbackServer


@pytest.fixture
async def fakes():
    claude, native = FakeAnthropic(), FakeResponses()
    async with LoopbackServer(claude.app) as a, LoopbackServer(native.app) as o:
        claude.url, native.url = a.url, o.url
        yield claude, native


@pytest.fixture
async def gw(fakes, start_gateway):
    claude, native = fakes
    return await start_gateway(f"""
        providers:
          offline: {{type: mock}}
          anthropic: {{type: anthropic, base_url: "{claude.url}", api_key: {ANTHROPIC_KEY}}}
          openai: {{type: openai, base_url: "{native.url}/v1", api_key: {OPENAI_KEY},
                    responses: native}}
        models:
          echo: {{targets: [{{provider: offline, model: echo}}]}}
          claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5}}]}}
          gpt: {{targets: [{{provider: openai, model: gpt-4.1}}]}}
    """)


# --- LangChain -------------------------------------------------------------------------

@pytest.fixture
def chat_model(gw):
    langchain_openai = pytest.importorskip("langchain_openai")

    def make(model: str):
        return langchain_openai.ChatOpenAI(model=model, base_url=gw.url + "/v1",
                                           api_key="unused", use_responses_api=True,
                                           max_retries=0)
    return make


async def test_langchain_invoke_and_stream_on_the_mock(chat_model):
    llm = chat_model("echo")
    message = await llm.ainvoke("hello from langchain")
    assert message.text == "hello from langchain"
    assert message.response_metadata["id"].startswith("resp_")
    assert message.usage_metadata["output_tokens"] > 0
    pieces = [chunk async for chunk in llm.astream("streamed through langchain")]
    assert "".join(p.text for p in pieces) == "streamed through langchain"
    assert any(p.usage_metadata for p in pieces)


async def test_langchain_tool_call_through_anthropic(fakes, chat_model):
    claude, _ = fakes
    claude.script(AReply(text="", tool_calls=[{"name": "get_weather",
                                               "input": {"city": "Paris"}}]))

    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    llm = chat_model("claude").bind_tools([get_weather])
    message = await llm.ainvoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert claude.last["tools"][0]["name"] == "get_weather"


# --- the OpenAI Agents SDK ---------------------------------------------------------------

@pytest.mark.parametrize("model,streamed", [("claude", False), ("gpt", False),
                                            ("claude", True)])
async def test_agents_sdk_runs_an_agent_with_a_function_tool(fakes, gw, model, streamed):
    agents = pytest.importorskip("agents")
    claude, native = fakes
    if model == "claude":
        claude.script(AReply(text="", tool_calls=[{"name": "get_weather",
                                                   "input": {"city": "Paris"}}]),
                      AReply(text="It is sunny in Paris."))
    else:
        native.script(OReply(calls=[{"name": "get_weather", "arguments": '{"city":"Paris"}'}]),
                      OReply(text="It is sunny in Paris."))
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        seen.append(city)
        return "sunny, 24C"

    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused",
                                  max_retries=0) as client:
        agent = agents.Agent(name="forecaster", instructions="Answer with the tool.",
                             tools=[get_weather],
                             model=agents.OpenAIResponsesModel(model=model,
                                                               openai_client=client))
        config = agents.RunConfig(tracing_disabled=True)
        if streamed:
            result = agents.Runner.run_streamed(agent, "Weather in Paris?", run_config=config)
            kinds = {event.type async for event in result.stream_events()}
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        else:
            result = await agents.Runner.run(agent, "Weather in Paris?", run_config=config)
    assert result.final_output == "It is sunny in Paris."
    assert seen == ["Paris"]
    if model == "claude":
        assert claude.last["messages"][-1]["content"][0]["content"] == "sunny, 24C"
    else:
        assert native.last["input"][-1]["output"] == "sunny, 24C"
