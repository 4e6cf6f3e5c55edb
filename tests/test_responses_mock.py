"""The Responses API against the offline `mock` model, as `make run` serves it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from tests.fakes.responses_grammar import check_stream
from tests.test_metrics import samples, value

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def gw(start_gateway):
    text = (ROOT / "proxy.example.yaml").read_text()
    config = load_config(ROOT / "proxy.example.yaml", env={})  # the example must load
    assert "echo" in config.models
    return await start_gateway(text)


@pytest.fixture
async def client(gw):
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused",
                                  max_retries=0) as c:
        yield c


async def test_create_stream_continue_retrieve_delete(client):
    first = await client.responses.create(model="echo", input="hello offline world")
    assert first.output_text == "hello offline world" and first.status == "completed"
    assert first.model == "echo" and first.usage.output_tokens > 0
    async with client.responses.stream(model="echo", input="and again",
                                       previous_response_id=first.id) as s:
        deltas = [e.delta async for e in s if e.type == "response.output_text.delta"]
        final = await s.get_final_response()
    assert "".join(deltas) == final.output_text == "and again"
    assert final.usage.input_tokens > first.usage.input_tokens  # the history went up
    assert (await client.responses.retrieve(final.id)).output_text == "and again"
    items = await client.responses.input_items.list(final.id)
    assert [i.content[0].text for i in items.data] == ["and again"]
    await client.responses.delete(final.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(final.id)


class Point(BaseModel):
    x: int
    y: int


async def test_parse_with_a_pydantic_model(client):
    parsed = await client.responses.parse(model="echo", input='{"x": 1, "y": 2}',
                                          text_format=Point)
    assert parsed.output_parsed == Point(x=1, y=2)


async def test_max_output_tokens_makes_an_incomplete_response(gw, client):
    words = " ".join(f"word{i}" for i in range(40))
    reply = await client.responses.create(model="echo", input=words, max_output_tokens=16)
    assert reply.status == "incomplete"
    assert reply.incomplete_details.reason == "max_output_tokens"
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/responses", json={"model": "echo", "input": words,
                                            "max_output_tokens": 16, "stream": True}) as resp:
        events = check_stream(await resp.read())
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


async def test_unknown_model_and_odd_requests(client):
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model="nope", input="x")
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="echo", input="x", background=True)
    assert info.value.body["param"] == "background"


async def test_logs_metrics_and_spans_name_the_endpoint(start_gateway, caplog):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
        telemetry: {tracing: true}
    """)
    spans = InMemorySpanExporter()
    gw.app[GATEWAY].tracing.add_exporter(spans)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with caplog.at_level("INFO", logger="gatewise.access"):
            await c.responses.create(model="echo", input="counted")
            await c.chat.completions.create(model="echo", messages=[
                {"role": "user", "content": "chat"}])
    assert [r.fields["endpoint"] for r in caplog.records if r.name == "gatewise.access"] == [
        "responses", "chat"]
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as resp:
        m = samples(await resp.text())
    for endpoint in ("responses", "chat"):
        assert value(m, "gatewise_requests_total", endpoint=endpoint, model="echo",
                     target="offline/echo", status="200", error_class="") == 1
    server = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert [s.attributes["gatewise.endpoint"] for s in server] == ["responses", "chat"]
