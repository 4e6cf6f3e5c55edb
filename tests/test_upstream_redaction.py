"""Upstreams echo keys: a configured secret in any string of any upstream error
(message, param, code, type; before a stream or mid-stream; from every provider
type; through the dispatcher or not) never reaches the client, a log, a span or
the ledger."""

from __future__ import annotations

import io
import logging
import sqlite3

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy.server.gateway import GATEWAY
from proxy.server.logs import log_handler
from tests.fakes import anthropic_upstream, azure_upstream, gemini_upstream, openai_upstream
from tests.fakes.server import LoopbackServer

OPENAI_KEY = "sk-planted-OpenAI-Zq8Xv3Lm9Tt2"
AZURE_KEY = "azure-planted-Kk1Hh4Jj6Nn8Pp0"
CLAUDE_KEY = "claude-test-planted-Ww2Yy5Cc3Vv5"  # not shaped like a real key
GEMINI_KEY = "AIza-planted-Bb7Dd9Ff1Gg3"
HEADER_SECRET = "org-planted-Qq4Rr6Ss8"
SECRETS = (OPENAI_KEY, AZURE_KEY, CLAUDE_KEY, GEMINI_KEY, HEADER_SECRET)


def echoing(key: str) -> dict:
    """An OpenAI-shaped error quoting `key` (and another provider's) in every field."""
    return {"message": f"Invalid request for key {key} (also {HEADER_SECRET})",
            "type": f"invalid_request_error:{key}", "param": f"messages.{key}",
            "code": f"bad_{key}"}


@pytest.fixture
async def setup(start_gateway, tmp_path):
    fakes = {"openai": openai_upstream.FakeOpenAI(api_key=OPENAI_KEY),
             "azure": azure_upstream.FakeAzure(api_key=AZURE_KEY),
             "claude": anthropic_upstream.FakeAnthropic(api_key=CLAUDE_KEY),
             "gemini": gemini_upstream.FakeGemini(api_key=GEMINI_KEY)}
    servers = {name: await LoopbackServer(fake.app).start() for name, fake in fakes.items()}
    db = tmp_path / "l.db"
    gw = await start_gateway(f"""
        providers:
          openai: {{type: openai, base_url: "{servers['openai'].url}/v1", api_key: "{OPENAI_KEY}",
                    headers: {{openai-organization: "{HEADER_SECRET}"}}}}
          azure: {{type: azure, base_url: "{servers['azure'].url}", api_key: "{AZURE_KEY}",
                   api_version: "2024-10-21"}}
          claude: {{type: anthropic, base_url: "{servers['claude'].url}", api_key: "{CLAUDE_KEY}"}}
          gemini: {{type: gemini, base_url: "{servers['gemini'].url}", api_key: "{GEMINI_KEY}"}}
        models:
          gpt: {{targets: [{{provider: openai, model: gpt-4o}}]}}
          az: {{targets: [{{provider: azure, model: gpt4o-prod}}]}}
          claude: {{targets: [{{provider: claude, model: claude-sonnet-4-5}}]}}
          gemini: {{targets: [{{provider: gemini, model: gemini-2.5-flash}}]}}
        state: {{ledger: "sqlite:{db}"}}
        telemetry: {{tracing: true}}
    """)
    gateway = gw.app[GATEWAY]
    assert set(SECRETS) <= set(gateway.config.secrets())
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [log_handler("json", gateway.config.secrets() and [], stream=buffer)]
    root.setLevel(logging.INFO)  # logs with NO redaction of their own: the error must be clean
    exporter = InMemorySpanExporter()
    gateway.tracing.add_exporter(exporter)
    try:
        yield gw, fakes, db, buffer, exporter
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for server in servers.values():
            await server.close()


async def call(gw, model: str, stream: bool) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/v1/chat/completions", json={
                "model": model, "stream": stream, "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}]}) as resp:
        raw = await resp.read()
        return resp.status, raw + orjson.dumps({str(k): v for k, v in resp.headers.items()})


async def test_no_secret_in_any_field_of_any_upstream_error(setup):
    gw, fakes, db, logs, exporter = setup
    seen: list[bytes] = []
    for stream in (False, True):
        # before any content: an error status from each provider type
        fakes["openai"].script(openai_upstream.Reply(status=400, body=echoing(OPENAI_KEY)))
        fakes["azure"].script(azure_upstream.Reply(status=400, body={"error": echoing(
            AZURE_KEY)}))
        fakes["claude"].script(anthropic_upstream.Reply(status=400, body={
            "type": "error", "error": {"type": f"invalid_request_error {CLAUDE_KEY}",
                                       "message": f"bad key {CLAUDE_KEY}"}}))
        fakes["gemini"].script(gemini_upstream.Reply(status=400, body={"error": {
            "code": 400, "message": f"API key {GEMINI_KEY} not valid for {HEADER_SECRET}",
            "status": "INVALID_ARGUMENT"}}))
        for model in ("gpt", "az", "claude", "gemini"):
            status, raw = await call(gw, model, stream)
            assert status == 400, raw
            seen.append(raw)
    # mid-stream error events, after content was sent
    event = b"data: " + orjson.dumps({"error": echoing(OPENAI_KEY)}) + b"\n\n"
    fakes["openai"].script(openai_upstream.Reply(inject={3: event}))
    status, raw = await call(gw, "gpt", True)
    assert status == 200 and b"[redacted]" in raw and b'"error"' in raw
    seen.append(raw)
    fakes["claude"].script(anthropic_upstream.Reply(error_after=4, error={
        "type": f"overloaded_error {CLAUDE_KEY}", "message": f"Overloaded {CLAUDE_KEY}"}))
    status, raw = await call(gw, "claude", True)
    seen.append(raw)
    fakes["gemini"].script(gemini_upstream.Reply(error_after=1, error={
        "code": 500, "message": f"internal {GEMINI_KEY}", "status": "INTERNAL"}))
    status, raw = await call(gw, "gemini", True)
    seen.append(raw)
    # an error event before any content
    fakes["openai"].script(openai_upstream.Reply(inject={0: event}))
    status, raw = await call(gw, "gpt", True)
    assert status == 500 and b"[redacted]" in raw  # an unknown error type inside a 200
    seen.append(raw)
    # an error built outside the dispatcher: /v1/messages/count_tokens asks Anthropic
    fakes["claude"].script(anthropic_upstream.Reply(
        status=400, error_type="invalid_request_error",
        message=f"key {CLAUDE_KEY} of {HEADER_SECRET} cannot count this"))
    async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/v1/messages/count_tokens", json={
                "model": "claude", "messages": [{"role": "user", "content": "hi"}]}) as resp:
        raw = await resp.read()
        assert resp.status == 400 and b"[redacted]" in raw, raw
        seen.append(raw)
    await gw.app[GATEWAY].budget.ledger.flush()
    ledger = orjson.dumps(sqlite3.connect(db).execute("SELECT * FROM spend").fetchall())
    spans = orjson.dumps([{"name": s.name, "attributes": dict(s.attributes),
                           "status": s.status.description,
                           "events": [dict(e.attributes or {}) for e in s.events]}
                          for s in exporter.get_finished_spans()], default=str)
    everything = {"client": b"".join(seen).decode(), "logs": logs.getvalue(),
                  "ledger": ledger.decode(), "spans": spans.decode()}
    assert "bad_[redacted]" in everything["client"]  # what is left of the field is kept
    assert "messages.[redacted]" in everything["client"]
    for where, text in everything.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into {where}"
