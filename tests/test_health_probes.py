"""Each upstream type is probed with the cheap request its API documents (its models
list) and the credentials a chat would carry, so a working provider is never
reported down; a wrong key is."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from proxy.server.gateway import GATEWAY
from tests.fakes import anthropic_upstream, azure_upstream, gemini_upstream, openai_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import LoopbackServer

# type -> (fake, provider yaml with {url} and {key}, the target's model, probe path seen)
CASES = {
    "openai": (FakeOpenAI, "{{type: openai, base_url: '{url}/v1', api_key: '{key}'}}",
               "gpt-4o", "/v1/models", openai_upstream.API_KEY),
    "anthropic": (FakeAnthropic, "{{type: anthropic, base_url: '{url}', api_key: '{key}'}}",
                  "claude-sonnet-4-5", "/v1/models", anthropic_upstream.API_KEY),
    "gemini": (FakeGemini, "{{type: gemini, base_url: '{url}', api_key: '{key}'}}",
               "gemini-2.5-flash", "/v1beta/models", gemini_upstream.API_KEY),
    "ollama": (lambda: FakeOllama(api_key="ollama-cloud-key-01"),
               "{{type: ollama, base_url: '{url}', api_key: '{key}'}}", "llama3.2",
               "/api/tags", "ollama-cloud-key-01"),
    "azure": (FakeAzure, "{{type: azure, base_url: '{url}', api_key: '{key}'}}",
              "gpt4o-prod", "/openai/models", azure_upstream.API_KEY),
    "azure-v1": (FakeAzure, "{{type: azure, base_url: '{url}', api_key: '{key}', "
                 "api_style: v1}}", "gpt4o-prod", "/openai/v1/models", azure_upstream.API_KEY),
}


def path_of(received) -> str | None:
    return getattr(received, "path", None)


async def wait_for(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("good_key", [True, False])
async def test_each_type_is_probed_with_its_documented_request(kind, good_key, start_gateway):
    make, provider, model, path, key = CASES[kind]
    fake = make()
    async with LoopbackServer(fake.app) as server:
        given = key if good_key else "wrong-key-0123456789"
        gw = await start_gateway(f"""
            providers:
              p: {provider.format(url=server.url, key=given)[:-1]},
                  health_check: {{interval: 50ms, timeout: 1s}}}}
            models: {{m: {{targets: [{{provider: p, model: {model}}}]}}}}
        """)
        health = gw.app[GATEWAY].health
        await wait_for(lambda: health.status("p") is not None)
        assert health.status("p") is good_key, health.results["p"].detail
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/health/ready") as resp:
                assert resp.status == (200 if good_key else 503)
        probes = [r for r in fake.requests if not getattr(r, "body", None)]
        assert probes, "no probe reached the upstream"
        if hasattr(probes[0], "path"):
            assert probes[0].path == path


async def test_a_model_check_sends_a_one_token_chat(start_gateway):
    fake = FakeAnthropic()
    async with LoopbackServer(fake.app) as server:
        gw = await start_gateway(f"""
            providers:
              p: {{type: anthropic, base_url: '{server.url}', api_key: {anthropic_upstream.API_KEY},
                  health_check: {{interval: 10s, model: claude-haiku-4-5}}}}
            models: {{m: {{targets: [{{provider: p, model: claude-sonnet-4-5}}]}}}}
        """)
        health = gw.app[GATEWAY].health
        await wait_for(lambda: health.status("p") is not None)
        assert health.status("p") is True
        assert fake.requests[0].body["max_tokens"] == 1
        assert fake.requests[0].body["model"] == "claude-haiku-4-5"
