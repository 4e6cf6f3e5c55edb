"""`POST /v1/completions` end to end: the real `openai` SDK → gatewise → OpenAI's native
completions (an instruct model), OpenAI chat, Anthropic and the mock via the chat adapter."""

import asyncio
import sqlite3

import aiohttp
import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AReply
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import LoopbackServer

KEY = "sk-gw-legacy-0123456789abcdef"


@pytest.fixture
async def env(start_gateway, tmp_path):
    oai, ant = FakeOpenAI(), FakeAnthropic()
    async with LoopbackServer(oai.app) as s1, LoopbackServer(ant.app) as s2:
        db = tmp_path / "ledger.db"
        gw = await start_gateway(f"""
            providers:
              openai: {{type: openai, base_url: "{s1.url}/v1", api_key: {OPENAI_KEY}}}
              anthropic: {{type: anthropic, base_url: "{s2.url}", api_key: {ANTHROPIC_KEY}}}
              offline: {{type: mock}}
            models:
              instruct: {{targets: [{{provider: openai, model: gpt-3.5-turbo-instruct}}]}}
              gpt: {{targets: [{{provider: openai, model: gpt-4o-mini}}]}}
              claude: {{targets: [{{provider: anthropic, model: claude-sonnet-4-5,
                                    price: {{input: 3, output: 15}}}}]}}
              echo: {{targets: [{{provider: offline, model: echo}}]}}
            keys:
              - {{name: app, key: {KEY}}}
            state: {{ledger: "sqlite:{db}"}}
        """)
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        yield {"gw": gw, "client": client, "openai": oai, "anthropic": ant, "db": db}


async def test_native_instruct_model_passes_through(env):
    client, fake = env["client"], env["openai"]
    fake.default = Reply(text="Paris is lovely")
    out = await client.completions.create(model="instruct", prompt=["a", "b"], n=2,
                                          suffix="!", max_tokens=5)
    sent = fake.requests[-1]
    assert sent.path == "/v1/completions"
    assert sent.body == {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "n": 2,
                         "suffix": "!", "max_tokens": 5}
    assert out.object == "text_completion" and len(out.choices) == 4
    assert out.choices[3].text == "Paris is lovely!" and out.choices[3].index == 3
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    stream = await client.completions.create(model="instruct", prompt="hi", stream=True,
                                             echo=True)
    texts = [c.choices[0].text async for c in stream]
    assert "".join(texts) == "hiParis is lovely"
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_chat_upstream_non_streaming(env):
    client, fake = env["client"], env["openai"]
    fake.default = Reply(text="Bonjour")
    out = await client.completions.create(model="gpt", prompt="Say hi", stop=["\n"],
                                          temperature=0.2, echo=True)
    assert fake.requests[-1].path == "/v1/chat/completions"
    assert fake.requests[-1].body == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}],
        "stop": ["\n"], "temperature": 0.2, "max_tokens": 16}  # OpenAI's legacy default
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    choice = out.choices[0]
    assert (choice.text, choice.index, choice.logprobs, choice.finish_reason) == (
        "Say hiBonjour", 0, None, "stop")
    assert out.usage.prompt_tokens > 0


async def test_anthropic_non_streaming_and_streaming(env):
    client, fake = env["client"], env["anthropic"]
    fake.script(AReply(text="Hello from Claude"), AReply(text="Streamed reply here"))
    out = await client.completions.create(model="claude", prompt="Greet me", max_tokens=50)
    assert fake.last["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Greet me"}]}]
    assert fake.last["max_tokens"] == 50
    assert out.choices[0].text == "Hello from Claude"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens > 0
    stream = await client.completions.create(model="claude", prompt="Again", stream=True,
                                             stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Streamed reply here"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    await _wait_rows(env["db"], 2)
    with sqlite3.connect(env["db"]) as conn:
        rows = conn.execute("SELECT model, http_status, prompt_tokens, completion_tokens, "
                            "cost, stream FROM spend WHERE state = 'done' "
                            "ORDER BY created_at").fetchall()
    assert [r[0] for r in rows] == ["claude", "claude"]
    assert all(r[1] == 200 and r[2] > 0 and r[3] > 0 and r[4] > 0 for r in rows)
    assert [r[5] for r in rows] == [0, 1]


async def test_stream_wire_format(env):
    env["openai"].default = Reply(text="one two")
    async with aiohttp.ClientSession() as http:
        async with http.post(env["gw"].url + "/v1/completions",
                             headers={"authorization": f"Bearer {KEY}"},
                             json={"model": "gpt", "prompt": "x", "stream": True}) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            raw = await resp.read()
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    for chunk in chunks:
        assert set(chunk) == {"id", "object", "created", "model", "choices",
                              "system_fingerprint"}
        assert chunk["object"] == "text_completion"
        (choice,) = chunk["choices"]
        assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
        assert choice["logprobs"] is None
    assert [c["choices"][0]["text"] for c in chunks] == ["one ", "two", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]


async def test_mock_streaming_with_echo_and_n(env):
    client = env["client"]
    stream = await client.completions.create(model="echo", prompt="ab cd", stream=True,
                                             echo=True, max_tokens=100)
    assert "".join([c.choices[0].text async for c in stream]) == "ab cdab cd"
    out = await client.completions.create(model="gpt", prompt="p", n=2)
    assert [c.index for c in out.choices] == [0, 1]


@pytest.mark.parametrize("extra,param", [
    ({"suffix": "end"}, "suffix"), ({"logprobs": 2}, "logprobs"), ({"best_of": 3}, "best_of"),
    ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2, 3]}, "prompt"),
])
async def test_what_chat_cannot_honour_is_a_400_naming_it(env, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await env["client"].completions.create(**{"model": "claude", "prompt": "x", **extra})
    assert caught.value.body["param"] == param
    assert caught.value.body["code"] == "unsupported_parameter"
    assert env["anthropic"].requests == []


async def test_bad_requests(env):
    gw = env["gw"]
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/completions", json={"model": "gpt", "prompt": "x"}) \
                as resp:
            assert resp.status == 401
        for body, param in [({"model": "gpt"}, "prompt"), ({"prompt": "x"}, "model"),
                            ({"model": "gpt", "prompt": {}}, "prompt"),
                            ({"model": "gpt", "prompt": "x", "echo": "yes"}, "echo"),
                            ({"model": "gpt", "prompt": "x", "messages": []}, "messages"),
                            ({"model": "gpt", "prompt": "x", "base_url": "h"}, "base_url")]:
            async with http.post(gw.url + "/completions", json=body,
                                 headers={"authorization": f"Bearer {KEY}"}) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]["param"] == param


async def _wait_rows(db, count: int) -> None:
    for _ in range(100):
        with sqlite3.connect(db) as conn:
            done = conn.execute("SELECT count(*) FROM spend WHERE state = 'done'").fetchone()[0]
        if done >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("ledger rows not written")


async def test_cache_never_replays_an_adapted_answer(start_gateway):
    # Regression: with the cache on, a legacy completion was stored as if it were a
    # chat completion and a repeat could be replayed as chat chunks.
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
        policies: {cache: {ttl: 60s}}
    """)
    body = {"model": "echo", "prompt": "say this twice", "max_tokens": 20, "stream": True}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(gw.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                assert "x-gatewise-cache" not in resp.headers
                raw = await resp.read()
            first = orjson.loads(raw.split(b"\n\n")[0].removeprefix(b"data: "))
            assert first["object"] == "text_completion"
            assert raw.endswith(b"data: [DONE]\n\n")


async def test_legacy_max_tokens_is_checked_like_chat(start_gateway):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/completions", json={
                "model": "echo", "prompt": "hi", "max_tokens": 0}) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
    assert error["param"] == "max_tokens" and error["code"] == "integer_below_min_value"
