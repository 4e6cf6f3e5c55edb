"""Every error the gateway makes on `/v1/messages` is in Anthropic's envelope with
Anthropic's status codes, including those from before the pipeline (401, 404,
405, 413), and `GET /v1/models` answers in Anthropic's shape when asked."""

from __future__ import annotations

import aiohttp
import anthropic
import orjson
import pytest
from multidict import CIMultiDict

TEAM, SLOW, BROKE = "team-key-0123456789", "slow-key-0123456789", "broke-key-0123456789"
CONFIG = f"""
    server: {{max_body_mb: 0.01}}
    providers:
      offline: {{type: mock}}
      gone: {{type: openai, base_url: "http://127.0.0.1:9", api_key: "${{NOT_SET}}"}}
    models:
      echo: {{targets: [{{provider: offline, model: echo, price: {{input: 1000, output: 1000}}}}]}}
      other: {{targets: [{{provider: offline, model: echo}}]}}
      dead: {{targets: [{{provider: gone, model: gpt-4o}}]}}
    keys:
      - {{name: team, key: "{TEAM}"}}
      - {{name: slow, key: "{SLOW}", rpm: 1, models: [echo]}}
      - {{name: broke, key: "{BROKE}", budget: {{usd: 0.0000001, per: day}}}}
"""
HELLO = {"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway(CONFIG)


async def call(gw, body=None, *, key: str | None = TEAM, method: str = "POST",
               path: str = "/v1/messages", raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict, CIMultiDict]:
    sent = {"anthropic-version": "2023-06-01", **(headers or {})}
    if key is not None:
        sent["x-api-key"] = key
    async with aiohttp.ClientSession() as http, http.request(
            method, gw.url + path, headers=sent,
            data=raw if raw is not None else (orjson.dumps(body) if body is not None
                                              else None)) as resp:
        return resp.status, orjson.loads(await resp.read()), CIMultiDict(resp.headers)


def anthropic_error(body: dict, kind: str) -> str:
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    return body["error"]["message"]


@pytest.mark.parametrize("key,headers", [(None, {}), ("wrong-key-000", {}),
                                         (None, {"authorization": "Bearer wrong"})])
async def test_401_before_the_body_is_read(gw, key, headers):
    status, body, got = await call(gw, raw=b"not json", key=key, headers=headers)
    assert status == 401
    anthropic_error(body, "authentication_error")
    assert got["request-id"] == body["request_id"]


@pytest.mark.parametrize("body,needle", [
    ({**HELLO, "model": "claude-sonnet-4-5"}, "claude-sonnet-4-5"),
])
async def test_unknown_model_is_404_not_found_error(gw, body, needle):
    status, answer, _ = await call(gw, body)
    assert status == 404 and needle in anthropic_error(answer, "not_found_error")


@pytest.mark.parametrize("raw,needle", [
    (b"{nope", "JSON"), (b"[1]", "JSON object"), (b"", "empty"),
    (orjson.dumps({"max_tokens": 5, "messages": []}), "model: Field required"),
    (orjson.dumps({**HELLO, "max_tokens": None}), "max_tokens: Field required"),
    (orjson.dumps({**HELLO, "max_tokens": -1}), "max_tokens"),
    (orjson.dumps({**HELLO, "max_tokens": True}), "max_tokens"),
    (orjson.dumps({**HELLO, "max_tokens": 10**9}), "max_tokens"),
    (orjson.dumps({**HELLO, "messages": []}), "at least one message"),
    (orjson.dumps({**HELLO, "messages": "hi"}), "messages"),
    (orjson.dumps({**HELLO, "messages": [None]}), "messages.0"),
    (orjson.dumps({**HELLO, "stream": "yes"}), "stream"),
    (orjson.dumps({**HELLO, "api_base": "http://evil"}), "api_base"),
    (orjson.dumps({**HELLO, "model": 7}), "model"),
])
async def test_bad_bodies_are_400_invalid_request_error(gw, raw, needle):
    status, body, _ = await call(gw, raw=raw)
    assert status == 400 and needle in anthropic_error(body, "invalid_request_error")


async def test_too_large_unknown_path_and_wrong_method(gw):
    status, body, _ = await call(gw, raw=b"x" * 20000)
    assert status == 413
    anthropic_error(body, "request_too_large")
    status, body, _ = await call(gw, HELLO, path="/v1/messages/batches")
    assert status == 404
    anthropic_error(body, "not_found_error")
    status, body, headers = await call(gw, method="GET")
    assert status == 405 and "POST" in headers["Allow"]
    anthropic_error(body, "invalid_request_error")


async def test_the_keys_allow_list_rate_limit_and_budget(gw):
    status, body, _ = await call(gw, {**HELLO, "model": "other"}, key=SLOW)
    assert status == 403
    anthropic_error(body, "permission_error")
    assert (await call(gw, HELLO, key=SLOW))[0] == 200
    status, body, headers = await call(gw, HELLO, key=SLOW)
    assert status == 429 and int(headers["retry-after"]) >= 1
    anthropic_error(body, "rate_limit_error")
    status, body, headers = await call(gw, {**HELLO, "messages": [
        {"role": "user", "content": "x" * 400}]}, key=BROKE)
    assert status == 429 and headers["x-should-retry"] == "false"  # no point retrying
    anthropic_error(body, "rate_limit_error")


async def test_no_usable_target_is_529_overloaded(gw):
    status, body, _ = await call(gw, {**HELLO, "model": "dead"})
    assert status == 529
    assert "NOT_SET" in anthropic_error(body, "overloaded_error")


async def test_the_sdk_reads_the_gateways_errors(gw):
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="bad", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as err:
            await c.messages.create(**HELLO)
    assert err.value.request_id and err.value.body["error"]["type"] == "authentication_error"


async def test_models_in_anthropics_shape_paged(gw):
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=TEAM) as c:
        page = await c.models.list(limit=2)
        assert [m.id for m in page.data] == ["echo", "other"] and page.has_more
        assert [m.id async for m in await c.models.list(limit=1)] == ["echo", "other", "dead"]
        model = await c.models.retrieve("echo")
        assert model.type == "model" and model.max_input_tokens == 1000000
        with pytest.raises(anthropic.NotFoundError):
            await c.models.retrieve("claude-opus-4-1")
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=SLOW) as c:
        assert [m.id for m in (await c.models.list()).data] == ["echo"]
    for limit in ("0", "%C2%B2"):  # a superscript two is a digit to str.isdigit
        status, body, _ = await call(gw, method="GET", path=f"/v1/models?limit={limit}")
        assert status == 400
        anthropic_error(body, "invalid_request_error")
    status, body, _ = await call(gw, method="GET", path="/v1/models", key=None,
                                 headers={"anthropic-version": "2023-06-01"})
    assert status == 401
    anthropic_error(body, "authentication_error")


async def test_openai_clients_still_get_openai_shapes(gw):
    async with aiohttp.ClientSession() as http, http.get(
            gw.url + "/v1/models", headers={"authorization": f"Bearer {TEAM}"}) as resp:
        assert (await resp.json())["object"] == "list"
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/chat/completions", headers={"authorization": "Bearer nope"},
            json={}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
