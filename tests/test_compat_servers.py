"""OpenAI-compatible servers (`type: openai` + base_url): every documented config example
parses, and the non-standard `reasoning` key reaches clients as `reasoning_content`,
end to end with the real `openai` SDK against a server that speaks like Ollama's /v1
and newer vLLM."""

import re
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from proxy.server.configure import parse_config
from tests.fakes.server import LoopbackServer

DOC = Path(__file__).resolve().parent.parent / "docs" / "providers" / "openai-compatible.md"
ENV = {name: "test-key" for name in ("DEEPSEEK_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY",
                                     "MISTRAL_API_KEY")}


def _examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_every_server_has_an_example():
    text = DOC.read_text()
    for name in ("DeepSeek", "vLLM", "Groq", "Together", "Mistral", "LM Studio", "llama.cpp"):
        assert f"## {name}" in text


@pytest.mark.parametrize("example", _examples())
def test_documented_examples_parse(example):
    config = parse_config(example, ENV)
    for provider in config.providers.values():
        assert provider.type == "openai" and provider.enabled
        assert provider.base_url.startswith(("http://", "https://"))


class CompatServer:
    """Speaks like Ollama's /v1 (delta `reasoning`) or vLLM ≥ 0.10 (both keys)."""

    def __init__(self, both: bool = False) -> None:
        self.both = both
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._handle)

    def _reasoning(self, text: str) -> dict:
        return {"reasoning": text, "reasoning_content": text} if self.both else \
            {"reasoning": text}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        base = {"id": "chatcmpl-123", "created": 1700000000, "model": body["model"],
                "system_fingerprint": "fp_ollama"}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "42",
                                        **self._reasoning("Thinking hard.")},
                "finish_reason": "stop"}], "usage": {
                "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        deltas = [{"role": "assistant", "content": "", **self._reasoning("Think")},
                  self._reasoning("ing."), {"content": "4"}, {"content": "2"}]
        for delta in deltas:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({
            **base, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({
            **base, "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture(params=[False, True], ids=["ollama-v1", "vllm-both-keys"])
async def gateway(request, start_gateway):
    server = CompatServer(both=request.param)
    async with LoopbackServer(server.app) as upstream:
        yield await start_gateway(f"""
            providers:
              compat: {{type: openai, base_url: "{upstream.url}/v1"}}
            models:
              local: {{targets: [{{provider: compat, model: "qwen3:8b"}}]}}
        """)


async def test_reasoning_normalised_non_streaming(gateway):
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    reply = await client.chat.completions.create(model="local",
                                                 messages=[{"role": "user", "content": "?"}])
    message = reply.choices[0].message
    assert message.content == "42"
    assert message.model_extra == {"reasoning_content": "Thinking hard."}


async def test_reasoning_normalised_streaming(gateway):
    payload = {
        "model": "local", "stream": True,
        "messages": [{"role": "user", "content": "?"}]}
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + "/v1/chat/completions", json=payload) as resp:
        raw = await resp.read()
    assert resp.status == 200 and b'"reasoning"' not in raw
    chunks = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e and e != b"data: [DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Thinking."
    assert "".join(d.get("content") or "" for d in deltas) == "42"
    assert raw.endswith(b"data: [DONE]\n\n")
