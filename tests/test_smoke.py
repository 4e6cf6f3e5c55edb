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


async def test_cost_header_without_any_budget_configured(start_gateway):
    # Regression: the cost was only computed by the budget policy, so a gateway
    # without budgets sent no x-gatewise-cost and logged no cost.
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models:
          priced: {targets: [{provider: offline, model: echo,
                              price: {input: 1000000, output: 2000000}}]}
          unpriced: {targets: [{provider: offline, model: some-local-model}]}
    """)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/v1/chat/completions", json={
                "model": "priced", "messages": [{"role": "user", "content": "hi there"}]}) as resp:
            usage = (await resp.json())["usage"]
            # $1 a prompt token, $2 a completion token
            expected = usage["prompt_tokens"] + 2 * usage["completion_tokens"]
            assert float(resp.headers["x-gatewise-cost"]) == expected
        async with http.post(f"{gw.url}/v1/chat/completions", json={
                "model": "unpriced", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200
            # a local type (mock, ollama) without a price costs $0; an unpriced cloud
            # target's cost stays unknown (tests/test_local_price.py)
            assert resp.headers["x-gatewise-cost"] == "0.00000000"
