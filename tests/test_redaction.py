"""A provider key planted in the config never shows: not in logs, metrics, spans or
error bodies, whether the call succeeds, the upstream refuses it, or code raises."""

from __future__ import annotations

import io
import logging

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy.server.gateway import GATEWAY
from proxy.server.logs import log_handler
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer
from translators.openai import OpenAITranslator

PLANTED = "sk-planted-Zq8Xv3Lm9Tt2Rr7Kk1"
WRONG = "sk-wrong-Hh4Jj6Nn8Pp0Ww2Yy5"
ADMIN = "admin-secret-Cc3Vv5Bb7"


@pytest.fixture
async def fake():
    fake = FakeOpenAI(api_key=PLANTED)
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def captured():
    """Every log line of the run, through the real formatter (json), at info level."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    state = {"buffer": buffer}

    def install(secrets):
        handler = log_handler("json", secrets, stream=buffer)
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    state["install"] = install
    yield state
    root.handlers[:], level = saved
    root.setLevel(level)


async def test_planted_key_never_leaks(start_gateway, fake, captured, monkeypatch):
    gw = await start_gateway(f"""
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: "${{PROVIDER_KEY}}"}}
          bad: {{type: openai, base_url: "{fake.url}/v1", api_key: "${{WRONG_KEY}}"}}
        models:
          gpt: {{targets: [{{provider: up, model: gpt-4o}}]}}
          refused: {{targets: [{{provider: bad, model: gpt-4o}}]}}
        admin: {{key: "${{ADMIN_KEY}}"}}
        policies: {{retry: {{attempts: 0}}}}
        telemetry: {{tracing: true}}
    """, env={"PROVIDER_KEY": PLANTED, "WRONG_KEY": WRONG, "ADMIN_KEY": ADMIN})
    gateway = gw.app[GATEWAY]
    assert {PLANTED, WRONG, ADMIN} <= set(gateway.config.secrets())
    captured["install"](gateway.config.secrets())
    exporter = InMemorySpanExporter()
    gateway.tracing.add_exporter(exporter)
    bodies: list[bytes] = []

    async def call(model: str, stream: bool = False) -> int:
        async with aiohttp.ClientSession() as http, http.post(
                f"{gw.url}/v1/chat/completions", json={
                    "model": model, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]}) as resp:
            bodies.append(await resp.read())
            bodies.append(orjson.dumps({str(k): v for k, v in resp.headers.items()}))
            return resp.status

    assert await call("gpt") == 200  # success
    assert await call("gpt", stream=True) == 200
    assert await call("refused") == 502  # the upstream answers 401 to the wrong key
    assert b"upstream_auth_error" in bodies[-2]
    # an upstream error message quoting the key (some providers echo it)
    fake.script(Reply(status=400, body={"message": f"Invalid key {PLANTED} for this org",
                                        "type": "invalid_request_error", "code": None}))
    assert await call("gpt") == 400
    assert b"Invalid key" in bodies[-2]

    def explode(self, status, headers, body):
        raise RuntimeError(f"translator blew up holding {PLANTED} and Bearer {PLANTED}")

    monkeypatch.setattr(OpenAITranslator, "response", explode)
    assert await call("gpt") == 500  # an exception inside the pipeline
    assert b"gateway_internal_error" in bodies[-2]
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/metrics") as resp:
        metrics = await resp.text()
    logs = captured["buffer"].getvalue()
    assert "translator blew up holding [redacted]" in logs  # the exception was logged...
    # ...and every request has its access line (the /metrics scrape included)
    assert logs.count('"msg":"request"') == 6
    spans = orjson.dumps([{"name": s.name, "attributes": dict(s.attributes),
                           "status": s.status.description,
                           "events": [dict(e.attributes or {}) for e in s.events]}
                          for s in exporter.get_finished_spans()]).decode()
    assert len(exporter.get_finished_spans()) >= 10
    everything = {"logs": logs, "metrics": metrics, "spans": spans,
                  "bodies": b"".join(bodies).decode()}
    for where, text in everything.items():
        for secret in (PLANTED, WRONG, ADMIN, PLANTED[:-2], PLANTED[3:]):
            assert secret not in text, f"{secret!r} leaked into {where}"
    assert fake.requests[0].headers["authorization"] == f"Bearer {PLANTED}"  # it was used


def test_redaction_by_field_name_and_shape():
    buffer = io.StringIO()
    logger = logging.getLogger("gatewise.test_redaction")
    logger.propagate = False
    logger.handlers[:] = [log_handler("json", [], stream=buffer)]
    logger.setLevel(logging.INFO)
    logger.info("request", extra={"fields": {"api_key": "plain-value-1234", "nested": {
        "Authorization": "whatever-5678"}, "note": "sent Bearer abcdefgh12345678 upstream",
        "prompt_tokens": 12}})
    logger.handlers[:] = [log_handler("text", ["value-in-text-999"], stream=buffer)]
    logger.info("text line", extra={"fields": {"password": "pw-00000000",
                                              "msg2": "value-in-text-999"}})
    out = buffer.getvalue()
    for secret in ("plain-value-1234", "whatever-5678", "abcdefgh12345678", "pw-00000000",
                   "value-in-text-999"):
        assert secret not in out
    first = orjson.loads(out.splitlines()[0])
    assert first["api_key"] == "[redacted]" and first["nested"]["Authorization"] == "[redacted]"
    assert first["prompt_tokens"] == 12 and first["note"] == "sent Bearer [redacted] upstream"
    assert "password=[redacted]" in out.splitlines()[1]
