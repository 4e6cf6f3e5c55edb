"""Spans captured in memory: one server span per request, one client span per
attempt, the right parents, GenAI attributes, and traceparent in and out."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy.server.gateway import GATEWAY
from tests.fakes.openai_upstream import API_KEY, Reply

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
PROMPT = "Say hello to the tracer"


async def traced(start_gateway, config: str) -> tuple[str, InMemorySpanExporter]:
    gw = await start_gateway(config)
    exporter = InMemorySpanExporter()
    gw.app[GATEWAY].tracing.add_exporter(exporter)
    return gw.url, exporter


def upstream_yaml(fake_url: str, telemetry: str = "{tracing: true}") -> str:
    return f"""
        providers:
          up: {{type: openai, base_url: "{fake_url}/v1", api_key: "{API_KEY}"}}
        models:
          gpt:
            targets: [{{provider: up, model: gpt-a}}, {{provider: up, model: gpt-b}}]
        policies:
          retry: {{attempts: 0}}
        telemetry: {telemetry}
    """


async def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/v1/chat/completions", json=body, headers=headers or {}) as resp:
        return resp.status, await resp.read()


async def test_server_and_attempt_spans_continue_the_client_trace(start_gateway, fake):
    url, exporter = await traced(start_gateway, upstream_yaml(fake.url))
    fake.script(Reply(status=500))  # gpt-a fails, gpt-b answers
    status, _ = await _post(url, {"model": "gpt", "temperature": 0.2,
                                  "messages": [{"role": "user", "content": PROMPT}]},
                            {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert status == 200
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT),
                      key=lambda s: s.attributes["gatewise.attempt"])
    assert len(servers) == 1 and len(attempts) == 2 and len(spans) == 3
    server = servers[0]
    assert server.name == "chat gpt"
    assert format(server.context.trace_id, "032x") == TRACE
    assert format(server.parent.span_id, "016x") == PARENT
    for attempt, model in zip(attempts, ("gpt-a", "gpt-b")):
        assert attempt.parent.span_id == server.context.span_id
        assert attempt.context.trace_id == server.context.trace_id
        assert attempt.name == f"chat {model}"
        assert attempt.attributes["gatewise.target"] == f"up/{model}"
        assert attempt.attributes["gen_ai.provider.name"] == "openai"
        assert server.start_time <= attempt.start_time <= attempt.end_time <= server.end_time
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert attempts[0].attributes["error.type"] == "server"
    assert attempts[0].attributes["http.response.status_code"] == 500
    assert attempts[1].status.status_code != StatusCode.ERROR
    # each upstream request carried the traceparent of its own attempt span
    sent = [r.headers["traceparent"] for r in fake.requests]
    assert sent == [f"00-{TRACE}-{a.context.span_id:016x}-01" for a in attempts]
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt"
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.response.model"] == "gpt-b"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gatewise.target"] == "up/gpt-b" and a["gatewise.attempts"] == 2
    assert a["http.response.status_code"] == 200
    assert PROMPT not in orjson.dumps([dict(s.attributes) for s in spans]).decode()


async def test_failed_request_span_and_new_trace(start_gateway, fake):
    url, exporter = await traced(start_gateway, upstream_yaml(fake.url))
    fake.script(Reply(status=401), Reply(status=401))
    status, _ = await _post(url, {"model": "gpt", "messages": [{"role": "user",
                                                                   "content": "x"}]})
    assert status == 502
    server = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert server.parent is None  # no client traceparent: a new trace
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["error.type"] == "auth"
    assert server.attributes["gatewise.error_class"] == "auth"
    assert server.attributes["http.response.status_code"] == 502


async def test_stream_cache_and_captured_content(start_gateway):
    url, exporter = await traced(start_gateway, """
        providers: {offline: {type: mock}}
        models: {echo: {cache: true, targets: [{provider: offline, model: echo}]}}
        telemetry: {tracing: true, capture_content: true}
    """)
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    for _ in range(2):
        status, _ = await _post(url, body)
        assert status == 200
    miss, hit = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert miss.attributes["gatewise.cache"] == "miss" and hit.attributes["gatewise.cache"] == "hit"
    for span in (miss, hit):
        assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert span.attributes["gen_ai.response.model"] == "echo"
        assert PROMPT in span.attributes["gen_ai.input.messages"]
        output = orjson.loads(span.attributes["gen_ai.output.messages"])
        assert output == [{"role": "assistant", "content": PROMPT}]
    assert hit.attributes["gatewise.attempts"] == 0
    assert hit.attributes["gen_ai.usage.output_tokens"] == miss.attributes[
        "gen_ai.usage.output_tokens"]


async def test_tracing_off_sends_no_traceparent(start_gateway, fake):
    gw = await start_gateway(upstream_yaml(fake.url, telemetry="{log_format: json}"))
    assert gw.app[GATEWAY].tracing is None
    status, _ = await _post(gw.url, {"model": "gpt", "messages": [{"role": "user",
                                                                   "content": "x"}]},
                            {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert status == 200
    assert "traceparent" not in fake.requests[-1].headers


def test_otlp_endpoint_is_checked():
    from proxy.server.configure import ConfigError, parse_config
    base = ("providers: {offline: {type: mock}}\n"
            "models: {echo: {targets: [{provider: offline, model: echo}]}}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(base + "telemetry: {otlp_endpoint: 'collector:4318'}\n", {})
    assert info.value.problems == [
        "telemetry.otlp_endpoint: must be an http:// or https:// URL, got 'collector:4318'"]
    try:
        config = parse_config(base + "telemetry: {otlp_endpoint: 'http://127.0.0.1:9/v1/traces'}\n",
                              {})
    except ConfigError as err:  # the optional extra is not installed here
        assert err.problems == [("telemetry.otlp_endpoint: needs the OTLP exporter: "
                                 "pip install 'gatewise[otlp]'")]
    else:
        assert config.telemetry.tracing and config.telemetry.otlp_endpoint
