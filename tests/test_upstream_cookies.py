"""An upstream's Set-Cookie never follows another client's request: the upstream
session keeps no cookies (one session serves every client)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from tests.fakes.server import LoopbackServer

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_cookie_set_by_the_upstream_is_not_sent_again():
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("cookie"))
        response = web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        response.set_cookie("session", "client-a-secret", path="/")
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", chat)
    async with LoopbackServer(upstream) as fake:
        config = parse_config(f"""
providers: {{up: {{type: openai, base_url: "{fake.url.replace("127.0.0.1", "localhost")}/v1",
                  api_key: sk-upstream}}}}
models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
""", {})
        async with LoopbackServer(build_app(config)) as gw, aiohttp.ClientSession() as http:
            for _ in range(2):  # two clients' requests, one after the other
                async with http.post(f"{gw.url}/v1/chat/completions", json=CHAT) as resp:
                    assert resp.status == 200
                    assert "set-cookie" not in resp.headers  # not relayed either
    assert seen == [None, None]
