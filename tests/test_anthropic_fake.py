"""The fake Anthropic upstream is faithful: the official `anthropic` SDK talks to it,
its answers validate as `anthropic.types.Message`, and it refuses what the API refuses."""

import anthropic
import pytest
from anthropic.types import Message

from tests.fakes.anthropic_upstream import API_KEY, FakeAnthropic, Reply
from tests.fakes.server import LoopbackServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def fake():
    fake = FakeAnthropic()
    async with LoopbackServer(fake.app) as server:
        fake.url = server.url
        yield fake


def client(fake, key=API_KEY):
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key=key, max_retries=0)


async def test_create_validates_as_message(fake):
    fake.script(Reply(text="Hi there", tool_calls=[{"name": "get", "input": {"a": 1}}]))
    msg = await client(fake).messages.create(
        model="claude-sonnet-4-5", max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
        tools=[{"name": "get", "input_schema": {"type": "object"}}])
    assert isinstance(msg, Message)
    Message.model_validate(msg.model_dump())
    assert msg.content[0].text == "Hi there"
    assert msg.content[1].type == "tool_use" and msg.content[1].input == {"a": 1}
    assert msg.stop_reason == "tool_use"
    assert fake.requests[-1].headers["anthropic-version"]


@pytest.mark.parametrize("split,crlf", [(0, False), (5, True)])
async def test_stream_accumulates_with_sdk(fake, split, crlf):
    fake.script(Reply(text="one two three", thinking="hmm let me think", split=split, crlf=crlf,
                      tool_calls=[{"name": "f", "input": {"x": "yz"}}]))
    async with client(fake).messages.stream(
            model="claude-sonnet-4-5", max_tokens=5000,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[{"name": "f", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "hello"}]) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "hmm let me think"
    assert final.content[0].signature.startswith("sig_")
    assert final.content[1].text == "one two three"
    assert final.content[2].input == {"x": "yz"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 1


async def test_stream_error_event_raises_in_sdk(fake):
    fake.script(Reply(text="a b c d", error_after=4))
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client(fake).messages.stream(
                model="claude-sonnet-4-5", max_tokens=50,
                messages=[{"role": "user", "content": "hello"}]) as stream:
            await stream.get_final_message()
    assert "overloaded_error" in str(info.value)


@pytest.mark.parametrize("status,exc", [
    (429, anthropic.RateLimitError), (529, anthropic.InternalServerError),
    (500, anthropic.InternalServerError), (400, anthropic.BadRequestError)])
async def test_scripted_errors_have_anthropic_shape(fake, status, exc):
    fake.script(Reply(status=status, headers={"retry-after": "3"} if status == 429 else {}))
    with pytest.raises(exc) as info:
        await client(fake).messages.create(model="claude-sonnet-4-5", max_tokens=10,
                                           messages=[{"role": "user", "content": "x"}])
    body = info.value.body
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["request_id"].startswith("req_")


async def test_bad_key_is_401(fake):
    with pytest.raises(anthropic.AuthenticationError):
        await client(fake, key="wrong").messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])


TOOL_TURN = {"role": "assistant", "content": [
    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}
REJECTED = [
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
     "text content blocks must be non-empty"),
    ({"messages": [{"role": "user", "content": "q"}, TOOL_TURN,
                   {"role": "user", "content": "no result"}]},
     "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call.1", "name": "f", "input": {}}]}]},
     "String should match pattern"),
    ({"frequency_penalty": 1}, "frequency_penalty: Extra inputs are not permitted"),
    ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ({"temperature": 0.5, "top_p": 0.5}, "cannot both be specified"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]}, "media_type"),
]


@pytest.mark.parametrize("change,message", REJECTED)
async def test_rejects_what_the_api_rejects(fake, change, message):
    import aiohttp
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}], **change}
    body = {k: v for k, v in body.items() if v is not None}
    async with aiohttp.ClientSession() as http:
        async with http.post(fake.url + "/v1/messages", json=body, headers={
                "x-api-key": API_KEY, "anthropic-version": "2023-06-01"}) as resp:
            assert resp.status == 400
            err = await resp.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert message in err["error"]["message"]
