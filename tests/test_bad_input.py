"""Bad requests are answered by gatewise itself, in OpenAI's envelope, and never
reach the upstream."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.fakes.openai_upstream import API_KEY

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gw(fake, start_gateway):
    return await start_gateway(f"""
        server: {{max_body_mb: 0.01}}
        providers:
          up: {{type: openai, base_url: "{fake.url}/v1", api_key: "${{FAKE_KEY}}"}}
        models:
          gpt-4o: {{targets: [{{provider: up, model: gpt-4o}}]}}
    """, env={"FAKE_KEY": API_KEY})


async def call(gw, method: str = "POST", path: str = "/v1/chat/completions", *,
               data: bytes | None = None, body: object = None,
               headers: dict | None = None) -> tuple[int, dict, dict]:
    if body is not None:
        data = orjson.dumps(body)
    async with aiohttp.ClientSession() as http:
        async with http.request(method, gw.url + path, data=data, headers=headers or {
                "content-type": "application/json"}) as resp:
            raw = await resp.read()
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, orjson.loads(raw)


def assert_envelope(payload: dict) -> dict:
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    for key in ("type", "code", "param"):
        assert error[key] is None or (isinstance(error[key], str) and error[key] != "None")
    return error


CASES = [
    ("invalid json", {"data": b'{"model": "gpt-4o", "messages": ['}, 400, None, "JSON"),
    ("empty body", {"data": b""}, 400, None, "empty"),
    ("whitespace body", {"data": b"  \n"}, 400, None, "empty"),
    ("json array", {"body": [1, 2]}, 400, None, "JSON object"),
    ("missing model", {"body": {"messages": USER}}, 400, None, "model"),
    ("model not a string", {"body": {"model": 4, "messages": USER}}, 400, "invalid_type",
     "model"),
    ("missing messages", {"body": {"model": "gpt-4o"}}, 400, "missing_required_parameter",
     "messages"),
    ("empty messages", {"body": {"model": "gpt-4o", "messages": []}}, 400, "empty_array",
     "messages"),
    ("message without role", {"body": {"model": "gpt-4o", "messages": [{"content": "x"}]}},
     400, "invalid_type", "messages[0]"),
    ("stream not bool", {"body": {"model": "gpt-4o", "messages": USER, "stream": "yes"}},
     400, "invalid_type", "stream"),
    ("stream_options without stream",
     {"body": {"model": "gpt-4o", "messages": USER, "stream_options": {"include_usage": True}}},
     400, None, "stream_options"),
    ("stream_options not an object",
     {"body": {"model": "gpt-4o", "messages": USER, "stream": True, "stream_options": "ab"}},
     400, "invalid_type", "stream_options"),
    ("max_tokens zero", {"body": {"model": "gpt-4o", "messages": USER, "max_tokens": 0}},
     400, "integer_below_min_value", "max_tokens"),
    ("max_tokens absurd", {"body": {"model": "gpt-4o", "messages": USER,
                                    "max_completion_tokens": 10**12}},
     400, "integer_above_max_value", "max_completion_tokens"),
    ("max_tokens a string", {"body": {"model": "gpt-4o", "messages": USER, "max_tokens": "9"}},
     400, "invalid_type", "max_tokens"),
    ("unknown model", {"body": {"model": "gpt-9", "messages": USER}}, 404, "model_not_found",
     "gpt-9"),
    ("oversized body", {"body": {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "x" * 20_000}]}}, 413, "request_too_large", "too large"),
]


@pytest.mark.parametrize("name,kwargs,status,code,text", CASES, ids=[c[0] for c in CASES])
async def test_bad_request(gw, fake, name, kwargs, status, code, text):
    got, headers, payload = await call(gw, **kwargs)
    error = assert_envelope(payload)
    assert got == status, error
    assert headers["x-request-id"].startswith("req_")
    assert headers["content-type"].startswith("application/json")
    assert text in error["message"]
    if code is not None:
        assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_legacy_stream_options_must_be_an_object(gw, fake):
    got, _, payload = await call(gw, path="/v1/completions", body={
        "model": "gpt-4o", "prompt": "hi", "stream": True, "stream_options": [1]})
    error = assert_envelope(payload)
    assert (got, error["code"], error["param"]) == (400, "invalid_type", "stream_options")
    assert fake.requests == []


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/v1/chat/completions", 405),
    ("PUT", "/v1/chat/completions", 405),
    ("DELETE", "/v1/models", 405),
    ("POST", "/v1/nothing-here", 404),
    ("GET", "/v2/chat/completions", 404),
])
async def test_wrong_method_or_path(gw, fake, method, path, status):
    got, headers, payload = await call(gw, method, path, data=b"{}")
    error = assert_envelope(payload)
    assert got == status
    assert headers["x-request-id"]
    assert path in error["message"]
    assert fake.requests == []


@pytest.mark.parametrize("body,field", [
    ({"api_base": "http://evil.example"}, "api_base"),
    ({"base_url": "http://evil.example"}, "base_url"),
    ({"api_key": "sk-other"}, "api_key"),
    ({"extra_body": {"api_key": "sk-other"}}, "extra_body.api_key"),
    ({"extra_body": {"base_url": "http://evil.example"}}, "extra_body.base_url"),
])
async def test_forbidden_fields(gw, fake, body, field):
    got, headers, payload = await call(gw, body={"model": "gpt-4o", "messages": USER, **body})
    error = assert_envelope(payload)
    assert got == 400
    assert error["param"] == field and f"'{field}'" in error["message"]
    assert headers["x-request-id"]
    assert fake.requests == []


async def test_tool_property_named_api_key_is_fine(gw, fake):
    tools = [{"type": "function", "function": {"name": "login", "parameters": {
        "type": "object", "properties": {"api_key": {"type": "string"},
                                         "base_url": {"type": "string"}}}}}]
    got, _, payload = await call(gw, body={"model": "gpt-4o", "messages": USER, "tools": tools})
    assert got == 200, payload
    assert fake.requests[-1].body["tools"] == tools


async def test_client_request_id_is_echoed_on_errors(gw):
    got, headers, _ = await call(gw, data=b"not json", headers={
        "content-type": "application/json", "x-request-id": "abc-123"})
    assert got == 400
    assert headers["x-request-id"] == "abc-123"


async def test_unsafe_client_request_id_is_replaced(gw):
    _, headers, _ = await call(gw, data=b"{}", headers={"x-request-id": "a b\tc" + "x" * 200})
    assert headers["x-request-id"].startswith("req_")
