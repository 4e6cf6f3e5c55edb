"""`POST /v1/embeddings` end to end: the real `openai` SDK → gatewise → each faithful fake
(OpenAI, Gemini, Ollama, Azure) and the offline mock; float and base64; usage in the ledger."""

import base64
import sqlite3
import struct

import aiohttp
import openai
import orjson
import pytest

from tests.fakes import embeddings_upstreams as fakes
from tests.fakes.embeddings_upstreams import (
    FakeAzureEmbeddings,
    FakeGeminiEmbeddings,
    FakeOllamaEmbeddings,
)
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply, fake_vector
from tests.fakes.server import LoopbackServer

KEY = "sk-gw-embeddings-0123456789abcdef"


@pytest.fixture
async def env(start_gateway, tmp_path):
    oai, gem, oll, az = FakeOpenAI(), FakeGeminiEmbeddings(), FakeOllamaEmbeddings(), \
        FakeAzureEmbeddings()
    async with LoopbackServer(oai.app) as s1, LoopbackServer(gem.app) as s2, \
            LoopbackServer(oll.app) as s3, LoopbackServer(az.app) as s4:
        db = tmp_path / "ledger.db"
        gw = await start_gateway(f"""
            providers:
              openai: {{type: openai, base_url: "{s1.url}/v1", api_key: {OPENAI_KEY}}}
              gemini: {{type: gemini, base_url: "{s2.url}", api_key: {fakes.API_KEY}}}
              ollama: {{type: ollama, base_url: "{s3.url}"}}
              azure: {{type: azure, base_url: "{s4.url}", api_key: {fakes.API_KEY}}}
              offline: {{type: mock}}
              claude: {{type: anthropic, api_key: x}}
            models:
              oai: {{targets: [{{provider: openai, model: text-embedding-3-small,
                                 price: {{input: 20, output: 0}}}}]}}
              gem: {{targets: [{{provider: gemini, model: text-embedding-004}}]}}
              oll: {{targets: [{{provider: ollama, model: nomic-embed-text}}]}}
              az: {{targets: [{{provider: azure, model: embed-prod}}]}}
              mock: {{targets: [{{provider: offline, model: mock-embed}}]}}
              chat-only: {{targets: [{{provider: claude, model: claude-sonnet-4-5}}]}}
              ha:
                strategy: priority
                targets: [{{provider: openai, model: text-embedding-3-small}},
                          {{provider: offline, model: mock-embed}}]
            keys:
              - {{name: app, key: {KEY}}}
            state: {{ledger: "sqlite:{db}"}}
        """)
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        yield {"gw": gw, "client": client, "openai": oai, "gemini": gem, "ollama": oll,
               "azure": az, "db": db}


def _decode(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_openai_float_and_base64_default(env):
    client = env["client"]
    floats = await client.embeddings.create(model="oai", input=["hello", "world"],
                                            encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == fake_vector(b'"hello"', 1536)
    assert floats.model == "text-embedding-3-small"
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    sent = env["openai"].requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body == {"input": ["hello", "world"], "model": "text-embedding-3-small"}
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    default = await client.embeddings.create(model="oai", input=["hello", "world"])
    assert env["openai"].requests[-1].body["encoding_format"] == "base64"  # the SDK's default
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]


async def test_openai_tokens_and_dimensions(env):
    out = await env["client"].embeddings.create(model="oai", input=[[1, 2, 3], [4, 5]],
                                                dimensions=8, encoding_format="float")
    assert [len(d.embedding) for d in out.data] == [8, 8]
    assert env["openai"].requests[-1].body["input"] == [[1, 2, 3], [4, 5]]


async def test_raw_base64_wire_is_little_endian_float32(env):
    async with aiohttp.ClientSession() as http:
        async with http.post(env["gw"].url + "/v1/embeddings",
                             headers={"authorization": f"Bearer {KEY}"},
                             json={"model": "gem", "input": "hi", "encoding_format": "base64",
                                   "dimensions": 4}) as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-target"] == "gemini/text-embedding-004"
            body = await resp.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == "text-embedding-004"
    item = body["data"][0]
    assert set(item) == {"object", "index", "embedding"} and item["object"] == "embedding"
    expected = fake_vector(orjson.dumps({"parts": [{"text": "hi"}]}), 4)
    assert _decode(item["embedding"]) == expected


async def test_gemini_single_and_batch(env):
    client, fake = env["client"], env["gemini"]
    one = await client.embeddings.create(model="gem", input="hello", encoding_format="float")
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/text-embedding-004:embedContent"
    assert sent.body == {"content": {"parts": [{"text": "hello"}]}}
    assert sent.headers["x-goog-api-key"] == fakes.API_KEY and "key" not in sent.query
    assert len(one.data[0].embedding) == 768
    many = await client.embeddings.create(model="gem", input=["a", "b", "c"], dimensions=16)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.body["requests"][2] == {"model": "models/text-embedding-004",
                                        "content": {"parts": [{"text": "c"}]},
                                        "outputDimensionality": 16}
    assert [len(d.embedding) for d in many.data] == [16, 16, 16]
    assert many.data[1].embedding == fake_vector(orjson.dumps({"parts": [{"text": "b"}]}), 16)
    assert many.usage.prompt_tokens > 0


async def test_gemini_refuses_token_arrays_naming_input(env):
    with pytest.raises(openai.BadRequestError) as caught:
        await env["client"].embeddings.create(model="gem", input=[1, 2, 3])
    assert caught.value.body["param"] == "input"
    assert env["gemini"].requests == []


async def test_ollama(env):
    client, fake = env["client"], env["ollama"]
    out = await client.embeddings.create(model="oll", input=["alpha beta", "gamma"])
    sent = fake.requests[-1]
    assert sent.path == "/api/embed"
    assert sent.body == {"model": "nomic-embed-text", "input": ["alpha beta", "gamma"]}
    assert out.data[0].embedding == fake_vector(b"alpha beta", 768)
    assert out.usage.prompt_tokens == 5  # the fake's prompt_eval_count
    single = await client.embeddings.create(model="oll", input="x", dimensions=32,
                                            encoding_format="float")
    assert fake.requests[-1].body == {"model": "nomic-embed-text", "input": "x",
                                      "dimensions": 32}
    assert len(single.data[0].embedding) == 32


async def test_azure(env):
    client, fake = env["client"], env["azure"]
    out = await client.embeddings.create(model="az", input="hello", encoding_format="float")
    sent = fake.requests[-1]
    assert sent.path == "/openai/deployments/embed-prod/embeddings"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == fakes.API_KEY and "authorization" not in sent.headers
    assert out.model == "text-embedding-3-small"
    b64 = await client.embeddings.create(model="az", input="hello")
    assert fake.requests[-1].body["encoding_format"] == "base64"
    assert b64.data[0].embedding == out.data[0].embedding == fake_vector(b'"hello"', 1536)


async def test_mock_is_deterministic_with_dimensions(env):
    client = env["client"]
    a = await client.embeddings.create(model="mock", input=["same", "other"], dimensions=5,
                                       encoding_format="float")
    b = await client.embeddings.create(model="mock", input="same", dimensions=5)
    assert len(a.data[0].embedding) == 5
    assert a.data[0].embedding == b.data[0].embedding != a.data[1].embedding
    assert abs(sum(x * x for x in a.data[0].embedding) - 1.0) < 1e-5


async def test_fallback_after_upstream_failure_and_ledger_row(env):
    env["openai"].script(Reply(status=503))
    async with aiohttp.ClientSession() as http:
        async with http.post(env["gw"].url + "/v1/embeddings",
                             headers={"authorization": f"Bearer {KEY}"},
                             json={"model": "ha", "input": "x", "encoding_format": "float"}) \
                as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-target"] == "offline/mock-embed"
            assert resp.headers["x-gatewise-attempts"] == "2"
    await env["client"].embeddings.create(model="oai", input="ledger me please")
    await _wait_rows(env["db"], 2)
    with sqlite3.connect(env["db"]) as conn:
        rows = conn.execute("SELECT model, target, http_status, prompt_tokens, "
                            "completion_tokens, cost FROM spend WHERE state = 'done' "
                            "ORDER BY created_at").fetchall()
    assert rows[0][:3] == ("ha", "offline/mock-embed", 200)
    model, target, status, prompt, completion, cost = rows[1]
    assert (model, target, status, completion) == ("oai", "openai/text-embedding-3-small",
                                                   200, 0)
    assert prompt > 0 and cost == pytest.approx(prompt * 20 / 1e6)


async def _wait_rows(db, count: int) -> None:
    import asyncio
    for _ in range(100):
        with sqlite3.connect(db) as conn:
            done = conn.execute("SELECT count(*) FROM spend WHERE state = 'done'").fetchone()[0]
        if done >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("ledger rows not written")


async def test_auth_and_bad_input(env):
    gw = env["gw"]
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/embeddings", json={"model": "oai", "input": "x"}) \
                as resp:
            assert resp.status == 401
        cases = [({"model": "oai"}, "input"), ({"model": "oai", "input": ""}, "input"),
                 ({"model": "oai", "input": [1, "a"]}, "input"),
                 ({"model": "oai", "input": "x", "encoding_format": "int8"}, "encoding_format"),
                 ({"model": "oai", "input": "x", "dimensions": 0}, "dimensions"),
                 ({"model": "oai", "input": "x", "api_base": "http://evil"}, "api_base"),
                 ({"model": "oai", "input": "x", "bogus": 1}, "bogus")]
        for body, param in cases:
            async with http.post(gw.url + "/embeddings", json=body,
                                 headers={"authorization": f"Bearer {KEY}"}) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]["param"] == param
        async with http.post(gw.url + "/v1/embeddings", json={"model": "nope", "input": "x"},
                             headers={"authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status == 404
        async with http.post(gw.url + "/v1/embeddings",
                             json={"model": "chat-only", "input": "x"},
                             headers={"authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "unsupported_model"
