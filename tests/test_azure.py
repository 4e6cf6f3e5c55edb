"""Azure OpenAI: URLs, key header, the prompt-filter preamble and content-filter errors,
end to end through gatewise with the real `openai` SDK against the faithful fake."""

import base64

import aiohttp
import openai
import orjson
import pytest

from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.errors import ErrorClass, GatewayError
from tests.fakes.azure_upstream import API_KEY, FakeAzure, Reply
from tests.fakes.server import LoopbackServer
from translators.azure import AzureTranslator

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def _translator(**options):
    return AzureTranslator(ProviderConfig("az", "azure", "https://res.openai.azure.com",
                                          api_key="azure-key-123",
                                          options={"api_version": "2024-10-21", **options}))


@pytest.mark.parametrize("options,url", [
    ({}, ("https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions"
          "?api-version=2024-10-21")),
    ({"api_style": "v1", "api_version": None},
     "https://res.openai.azure.com/openai/v1/chat/completions"),
    ({"api_style": "v1", "api_version": "preview"},
     "https://res.openai.azure.com/openai/v1/chat/completions?api-version=preview")])
def test_url_styles(options, url):
    request = _translator(**options).request(CHAT, TargetConfig("az", "gpt4o-prod"),
                                             stream=False)
    assert request.url == url
    assert request.headers["api-key"] == "azure-key-123" and "authorization" not in request.headers
    assert orjson.loads(request.body)["model"] == "gpt4o-prod"


@pytest.mark.parametrize("deployment", ["../../admin", "a/b", "x?api-version=1", "", "a b",
                                        "d#frag", "x" * 65])
def test_unsafe_deployments_never_reach_the_url(deployment):
    with pytest.raises(GatewayError) as err:
        _translator().request(CHAT, TargetConfig("az", deployment), stream=False)
    assert err.value.status == 500 and err.value.code == "gateway_config_error"


def test_unsafe_api_version_refused():
    with pytest.raises(GatewayError):
        _translator(api_version="2024&x=1").request(CHAT, TargetConfig("az", "d"), stream=False)


@pytest.mark.parametrize("status,error,cls,client_status,code", [
    (400, {"code": "content_filter", "message": "filtered", "param": "prompt", "status": 400,
           "innererror": {"code": "ResponsibleAIPolicyViolation"}},
     ErrorClass.CONTENT_FILTER, 400, "content_filter"),
    (400, {"code": "context_length_exceeded", "message": "too long"},
     ErrorClass.CONTEXT_WINDOW, 400, "context_length_exceeded"),
    (429, {"code": "429", "message": "Please retry after 6 seconds."},
     ErrorClass.RATE_LIMITED, 429, None),
    (404, {"code": "DeploymentNotFound", "message": "no such deployment"},
     ErrorClass.NOT_FOUND, 404, "DeploymentNotFound"),
    (401, {"code": "401", "message": "Access denied"}, ErrorClass.AUTH, 502,
     "upstream_auth_error"),
    (500, {"code": "500", "message": "oops"}, ErrorClass.SERVER, 500, None)])
def test_error_table(status, error, cls, client_status, code):
    err = _translator().error(status, {}, orjson.dumps({"error": error}))
    assert (err.error_class, err.status, err.code) == (cls, client_status, code)


# --- end to end ----------------------------------------------------------------------

@pytest.fixture
async def fake():
    fake = FakeAzure()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def gateway(fake, start_gateway):
    return await start_gateway(f"""
        providers:
          azure-eu: {{type: azure, base_url: "{fake.url}", api_key: {API_KEY},
                      api_version: "2024-10-21"}}
          azure-v1: {{type: azure, base_url: "{fake.url}", api_key: {API_KEY}, api_style: v1,
                      api_version: preview}}
          azure-bad: {{type: azure, base_url: "{fake.url}", api_key: not-the-key}}
        models:
          gpt-4o: {{targets: [{{provider: azure-eu, model: gpt4o-prod}}]}}
          gpt-4o-v1: {{targets: [{{provider: azure-v1, model: gpt4o-prod}}]}}
          ghost: {{targets: [{{provider: azure-eu, model: not-deployed}}]}}
          badkey: {{targets: [{{provider: azure-bad, model: gpt4o-prod}}]}}
    """)


@pytest.fixture
def client(gateway):
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


@pytest.mark.parametrize("model,path,query", [
    ("gpt-4o", "/openai/deployments/gpt4o-prod/chat/completions", {"api-version": "2024-10-21"}),
    ("gpt-4o-v1", "/openai/v1/chat/completions", {"api-version": "preview"})])
async def test_text_both_styles(fake, client, model, path, query):
    fake.script(Reply(text="Hi from Azure"))
    reply = await client.chat.completions.create(model=model,
                                                 messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hi from Azure"
    assert reply.usage.total_tokens > 0
    received = fake.requests[-1]
    assert (received.path, received.query) == (path, query)
    assert received.headers["api-key"] == API_KEY and "authorization" not in received.headers


async def test_stream_skips_the_preamble_chunk(gateway, fake):
    fake.script(Reply(text="one two"))
    payload = {
        "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + "/v1/chat/completions", json=payload) as resp:
        raw = await resp.read()
    events = [e[6:] for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert b"prompt_filter_results" not in raw
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_streaming_parallel_tool_calls_multi_turn(fake, client):
    fake.script(Reply(tool_calls=[
        {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"id": "call_b", "name": "get_weather", "arguments": '{"city":"Oslo"}'}]),
        Reply(text="Both fine."))
    messages = [{"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                             {"type": "image_url", "image_url": {"url": PNG}}]}]
    async with client.chat.completions.stream(model="gpt-4o", messages=messages,
                                              tools=TOOLS) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.id for c in choice.message.tool_calls] == ["call_a", "call_b"]
    messages += [choice.message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
                 {"role": "tool", "tool_call_id": "call_b", "content": "snow"}]
    second = await client.chat.completions.create(model="gpt-4o", messages=messages,
                                                  tools=TOOLS)
    assert second.choices[0].message.content == "Both fine."
    assert fake.last["messages"][0]["content"][1]["image_url"]["url"] == PNG


async def test_content_filter_finish_passes(fake, client):
    fake.script(Reply(text="partial", finish_reason="content_filter"))
    stream = await client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "x"}])
    chunks = [c async for c in stream]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason] == ["content_filter"]


async def test_filtered_prompt_is_a_content_filter_400(fake, client):
    fake.script(Reply(filtered_prompt=True))
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="gpt-4o",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "content_filter"
    assert "content management policy" in err.value.message


@pytest.mark.parametrize("reply,exc,status", [
    (Reply(status=429, body={"error": {"code": "429", "message": "Requests to the "
           "ChatCompletions_Create Operation have exceeded token rate limit. Please retry after "
           "6 seconds."}}, headers={"retry-after": "6"}), openai.RateLimitError, 429),
    (Reply(status=500), openai.InternalServerError, 500),
    (Reply(status=503), openai.InternalServerError, 503)])
async def test_error_classes(fake, client, reply, exc, status):
    fake.script(reply)
    with pytest.raises(exc) as err:
        await client.chat.completions.create(model="gpt-4o",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == status
    if status == 429:
        assert err.value.response.headers["retry-after"] == "6" and err.value.code is None


async def test_auth_and_missing_deployment(client):
    with pytest.raises(openai.InternalServerError) as err:
        await client.chat.completions.create(model="badkey",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and err.value.code == "upstream_auth_error"
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="ghost",
                                             messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "DeploymentNotFound"


async def test_mid_stream_error(fake, client):
    fake.script(Reply(text="a b c d e", error_after=4))
    stream = await client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "x"}])
    seen = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            seen.append(chunk)
    assert seen
