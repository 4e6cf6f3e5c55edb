"""End to end: the official `anthropic` SDK → gatewise `/v1/messages` → an OpenAI-type
and a Gemini upstream (faithful fakes), and the offline mock: translated both ways,
streamed event by event."""

from __future__ import annotations

import base64
import logging

import aiohttp
import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy.server.gateway import GATEWAY

from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.gemini_upstream import Reply as GeminiReply
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.ollama_upstream import Reply as OllamaReply
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.server import LoopbackServer

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


@pytest.fixture
async def fakes():
    openai_fake, gemini = FakeOpenAI(), FakeGemini()
    async with LoopbackServer(openai_fake.app) as o, LoopbackServer(gemini.app) as g:
        openai_fake.url, gemini.url = o.url, g.url
        yield openai_fake, gemini


@pytest.fixture
async def client(fakes, start_gateway):
    openai_fake, gemini = fakes
    gw = await start_gateway(f"""
        providers:
          openai: {{type: openai, base_url: "{openai_fake.url}/v1", api_key: "{OPENAI_KEY}"}}
          local: {{type: openai, base_url: "{openai_fake.url}/v1", api_key: "{OPENAI_KEY}"}}
          gemini: {{type: gemini, base_url: "{gemini.url}", api_key: "{GEMINI_KEY}"}}
          offline: {{type: mock}}
        models:
          gpt: {{targets: [{{provider: openai, model: gpt-4o}}]}}
          local: {{targets: [{{provider: local, model: qwen3-coder}}]}}
          gemini: {{targets: [{{provider: gemini, model: gemini-2.5-flash}}]}}
          gemini3: {{targets: [{{provider: gemini, model: gemini-3-pro-preview}}]}}
          echo: {{targets: [{{provider: offline, model: echo}}]}}
          gpt-lax: {{drop_unsupported: true, targets: [{{provider: openai, model: gpt-4o}}]}}
    """)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0) as c:
        yield c


async def test_openai_plain(fakes, client):
    openai_fake = fakes[0]
    openai_fake.script(OpenAIReply(text="Bonjour."))
    reply = await client.messages.create(
        model="gpt", max_tokens=50, system=[{"type": "text", "text": "Be brief."},
                                            {"type": "text", "text": "Speak French."}],
        stop_sequences=["END"], metadata={"user_id": "u-7"},
        messages=[{"role": "user", "content": "Hello"}])
    assert reply.content[0].text == "Bonjour." and reply.stop_reason == "end_turn"
    assert reply.id.startswith("msg_") and reply.role == "assistant"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    sent = openai_fake.requests[-1].body
    assert sent == {"model": "gpt-4o", "max_tokens": 50, "stop": ["END"],
                    "user": "u-7", "messages": [
                        {"role": "system", "content": "Be brief.\n\nSpeak French."},
                        {"role": "user", "content": "Hello"}]}


async def test_openai_streamed_with_a_tool_round_trip(fakes, client):
    openai_fake = fakes[0]
    openai_fake.script(
        OpenAIReply(text="Checking.", tool_calls=[
            {"id": "call_a.b:1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]),
        OpenAIReply(text="Sunny."))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    async with client.messages.stream(model="gpt", max_tokens=100, tools=TOOLS,
                                      tool_choice={"type": "any"},
                                      messages=messages) as stream:
        kinds = [event.type async for event in stream]
        first = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in first.content] == ["tool_use"]
    call = first.content[0]
    assert call.input == {"city": "Paris"} and first.stop_reason == "tool_use"
    assert call.id.startswith("call_a_b_1_")  # made valid for Anthropic clients
    messages += [first.to_param(), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 24C"},
        {"type": "text", "text": "And tomorrow?"}]}]
    async with client.messages.stream(model="gpt", max_tokens=100, tools=TOOLS,
                                      messages=messages) as stream:
        second = await stream.get_final_message()
    assert second.content[0].text == "Sunny." and second.usage.input_tokens > 0
    sent = openai_fake.requests[-1].body
    assert sent["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert sent["messages"][2:] == [
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": TOOLS[0]["input_schema"]}}]
    assert openai_fake.requests[0].body["tool_choice"] == "required"


async def test_openai_image_input_and_images_inside_tool_results(fakes, client):
    openai_fake = fakes[0]
    messages = [
        {"role": "user", "content": [IMAGE, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "camera"}, IMAGE]}]}]
    await client.messages.create(model="gpt", max_tokens=50, tools=TOOLS, messages=messages)
    sent = openai_fake.requests[-1].body["messages"]
    assert sent[0]["content"][0] == {"type": "image_url",
                                     "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1",
                       "content": '{"error":"camera"}'}
    assert sent[3]["role"] == "user" and sent[3]["content"][1]["type"] == "image_url"


async def test_gemini_plain_streamed_and_thinking(fakes, client):
    gemini = fakes[1]
    gemini.script(GeminiReply(text="Forty-two.", thought="Six times seven."))
    async with client.messages.stream(
            model="gemini", max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 2000},
            messages=[{"role": "user", "content": [IMAGE, {"type": "text",
                                                           "text": "Answer?"}]}]) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Six times seven." and final.content[1].text == \
        "Forty-two."
    sent = gemini.requests[-1].body
    assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024,
                                                          "includeThoughts": True}
    assert sent["contents"][0]["parts"][0]["inlineData"] == {"mimeType": "image/png",
                                                            "data": PNG}


async def test_gemini3_tool_round_trip_keeps_the_thought_signature(fakes, client):
    gemini = fakes[1]
    gemini.script(GeminiReply(text="", tool_calls=[{"name": "get_weather",
                                                    "args": {"city": "Oslo"}}]),
                  GeminiReply(text="Cold."))
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    first = await client.messages.create(model="gemini3", max_tokens=200, tools=TOOLS,
                                         messages=messages)
    call = first.content[-1]
    assert call.type == "tool_use" and "__ts_" in call.id  # the signature rides in the id
    messages += [first.to_param(), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "-3C"}]}]
    second = await client.messages.create(model="gemini3", max_tokens=200, tools=TOOLS,
                                          messages=messages)
    assert second.content[0].text == "Cold."  # Gemini 3 accepted the turn


async def test_mock_plain_and_streamed(client):
    reply = await client.messages.create(model="echo", max_tokens=50,
                                         messages=[{"role": "user", "content": "echo me"}])
    assert reply.content[0].text == "echo me" and reply.usage.output_tokens == 3
    async with client.messages.stream(model="echo", max_tokens=1, messages=[
            {"role": "user", "content": "cut me short"}]) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == "cut " and final.stop_reason == "max_tokens"
    assert final.usage.input_tokens > 0  # message_delta carries the real input count


async def test_count_tokens_elsewhere_is_a_flagged_estimate(client):
    count = await client.messages.count_tokens(
        model="gpt", messages=[{"role": "user", "content": "y" * 800}])
    assert count.model_extra["estimated"] is True and 200 <= count.input_tokens < 230


async def test_anthropic_only_features_are_refused_or_dropped(fakes, client):
    openai_fake = fakes[0]
    web_search = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model="gpt", max_tokens=10, tools=[*TOOLS, web_search],
                                     messages=[{"role": "user", "content": "hi"}])
    assert "tools.1" in err.value.body["error"]["message"]
    assert err.value.body["error"]["type"] == "invalid_request_error"
    before = len(openai_fake.requests)
    await client.messages.create(model="gpt-lax", max_tokens=10, tools=[*TOOLS, web_search],
                                 messages=[{"role": "user", "content": "hi"}])
    assert len(openai_fake.requests) == before + 1
    assert [t["function"]["name"] for t in openai_fake.requests[-1].body["tools"]] == [
        "get_weather"]
    with pytest.raises(anthropic.BadRequestError) as err:  # no chat form, even when lax
        await client.messages.create(model="gpt-lax", max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "image", "source": {
                "type": "file", "file_id": "file_1"}}]}])
    assert "messages.0.content.0.source" in err.value.body["error"]["message"]


async def test_thinking_on_a_model_that_does_not_reason(fakes, client):
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model="gpt", max_tokens=3000, messages=[
            {"role": "user", "content": "hi"}], thinking={"type": "enabled",
                                                          "budget_tokens": 1024})
    assert err.value.body["error"]["message"].startswith("thinking:")
    await client.messages.create(model="gpt-lax", max_tokens=3000, messages=[
        {"role": "user", "content": "hi"}], thinking={"type": "enabled", "budget_tokens": 1024})
    assert "reasoning_effort" not in fakes[0].requests[-1].body


async def test_a_translators_refusal_names_the_anthropic_field(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model="gemini", max_tokens=10, tools=TOOLS,
                                     tool_choice={"type": "auto",
                                                  "disable_parallel_tool_use": True},
                                     messages=[{"role": "user", "content": "hi"}])
    assert "'tool_choice.disable_parallel_tool_use'" in err.value.body["error"]["message"]


async def test_an_openai_compatible_server_gets_max_tokens(fakes, client):
    await client.messages.create(model="local", max_tokens=10,
                                 messages=[{"role": "user", "content": "hi"}])
    assert fakes[0].requests[-1].body["max_tokens"] == 10


async def test_metrics_traces_and_the_access_log_name_the_endpoint(start_gateway, caplog):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
        telemetry: {tracing: true}
    """)
    exporter = InMemorySpanExporter()
    gw.app[GATEWAY].tracing.add_exporter(exporter)
    with caplog.at_level(logging.INFO, logger="gatewise.access"):
        async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x") as c:
            await c.messages.create(model="echo", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}])
    line = next(r for r in caplog.records if r.name == "gatewise.access")
    assert line.fields["endpoint"] == "messages" and line.fields["status"] == 200
    server = next(s for s in exporter.get_finished_spans() if s.kind.name == "SERVER")
    assert server.attributes["gatewise.endpoint"] == "messages"
    assert server.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert ('gatewise_requests_total{endpoint="messages",model="echo",target="offline/echo",'
            'status="200",error_class=""} 1.0') in text


async def test_ollama_streamed_tool_round_trip_top_k_and_thinking(start_gateway):
    fake = FakeOllama()
    async with LoopbackServer(fake.app) as server:
        gw = await start_gateway(f"""
            providers: {{local: {{type: ollama, base_url: "{server.url}"}}}}
            models:
              qwen: {{targets: [{{provider: local, model: qwen3, capabilities: [tools,
                                                                           reasoning]}}]}}
        """)
        fake.script(OllamaReply(text="", thinking="Need the tool.", tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Lima"}}]),
            OllamaReply(text="Warm."))
        async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x") as c:
            messages = [{"role": "user", "content": "Weather in Lima?"}]
            args = {"model": "qwen", "max_tokens": 3000, "tools": TOOLS,
                    "thinking": {"type": "enabled", "budget_tokens": 20000},
                    "extra_body": {"top_k": 20}}
            async with c.messages.stream(messages=messages, **args) as stream:
                first = await stream.get_final_message()
            assert [b.type for b in first.content] == ["thinking", "tool_use"]
            call = first.content[1]
            assert call.input == {"city": "Lima"} and first.stop_reason == "tool_use"
            messages += [first.to_param(), {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "25C"}]}]
            second = await c.messages.create(messages=messages, **args)
        assert second.content[-1].text == "Warm."
        sent = fake.requests[-1].body
        assert sent["options"]["top_k"] == 20 and sent["think"] == "high"
        assert sent["messages"][-1] == {"role": "tool", "content": "25C",
                                        "tool_name": "get_weather"}
