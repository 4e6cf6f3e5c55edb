"""The offline default serves: the quickstart's promise, in-process."""

import aiohttp


async def test_mock_model_answers(start_gateway):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json={
                "model": "echo", "messages": [{"role": "user", "content": "hi there"}]}) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert resp.headers["x-gatewise-target"] == "offline/echo"
            assert resp.headers["x-request-id"].startswith("req_")
    assert body["choices"][0]["message"]["content"] == "hi there"
    assert body["usage"]["completion_tokens"] == 3  # "hi " 1 + "there" 2, about 4 chars a token
