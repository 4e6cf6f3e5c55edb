"""Route rules end to end: one rule per match kind, the first match wins, 403 for a model
the key may not use, task kinds, and what hostile requests cannot do with them."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.server.configure import ConfigError, parse_config

ADMIN = "admin-key-0123456789abcdef"
KEYS = {"ALPHA": "alpha-key-0123456789abcdef", "BETA": "beta-key-0123456789abcdef",
        "GAMMA": "gamma-key-0123456789abcdef", "DELTA": "delta-key-0123456789abcdef",
        "ADMIN": ADMIN}
NAMES = ("header", "key", "meta", "user", "endpoint", "tokens", "tools", "images", "task",
         "messages")

CONFIG = f"""
admin: {{key: "${{ADMIN}}"}}
providers:
  base: {{type: mock}}
  pa: {{type: mock}}
  pb: {{type: mock}}
{"".join(f"  p-{n}: {{type: mock}}{chr(10)}" for n in NAMES)}
models:
  chat:
    targets: [{{provider: base, model: echo}}, {{provider: pa, model: echo, tier: gold}},
              {{provider: pb, model: echo}}]
{"".join(f"  to-{n}: {{targets: [{{provider: p-{n}, model: echo}}]}}{chr(10)}" for n in NAMES)}
  secret: {{targets: [{{provider: pb, model: echo}}]}}
keys:
  - {{name: alpha, key: "${{ALPHA}}", metadata: {{team: research, level: 3}}}}
  - {{name: beta, key: "${{BETA}}", models: [chat, "to-*"], metadata: {{team: sales}},
     tasks: [coding]}}
  - {{name: gamma, key: "${{GAMMA}}", models: [chat, to-key]}}
  - {{name: delta, key: "${{DELTA}}"}}
routes:
  - {{name: header, match: {{header: {{x-team: [blue, green]}}}}, model: to-header}}
  - {{name: key, match: {{key: gamma, header: {{x-want: key}}}}, model: to-key}}
  - {{name: meta, match: {{metadata: {{team: research}}}}, model: to-meta}}
  - {{name: user, match: {{user: [u-17, "ünï-çødé"]}}, model: to-user}}
  - {{name: endpoint, match: {{endpoint: completions}}, model: to-endpoint}}
  - {{name: messages, match: {{endpoint: [messages, responses]}}, model: to-messages}}
  - {{name: tokens, match: {{prompt_tokens: {{min: 2000}}}}, model: to-tokens}}
  - {{name: tools, match: {{tools: true}}, model: to-tools}}
  - {{name: images, match: {{images: true}}, model: to-images}}
  - {{name: task, match: {{task: creative}}, model: to-task}}
  - {{name: gold, match: {{header: {{x-tier: gold}}}}, targets: [tier:gold]}}
  - {{name: secret, match: {{header: {{x-want: secret}}}}, model: secret}}
  - {{name: coding, match: {{header: {{x-want: coding}}}}, task: coding}}
"""

TEXT = [{"role": "user", "content": "hello"}]
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, {
    "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway(CONFIG, env=KEYS)


async def call(gw, key: str = "BETA", body: dict | None = None, headers: dict | None = None,
               path: str = "/v1/chat/completions"):
    body = {"model": "chat", "messages": TEXT, **(body or {})}
    sent = {"authorization": f"Bearer {KEYS[key]}", **(headers or {})}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + path, json=body, headers=sent) as resp:
            return resp.status, resp.headers, await resp.json()


def route(headers) -> tuple[str | None, str | None]:
    """(rule, target) from the answer's headers."""
    value = headers.get("x-gatewise-route", "")
    rule = value.split(";")[0].removeprefix("rule=") if value.startswith("rule=") else None
    return rule, headers.get("x-gatewise-target")


@pytest.mark.parametrize("name,key,body,headers,path", [
    ("header", "BETA", {}, {"x-team": "green"}, None),
    ("key", "GAMMA", {}, {"x-want": "key"}, None),
    ("meta", "ALPHA", {}, {}, None),
    ("user", "BETA", {"user": "u-17"}, {}, None),
    ("user", "BETA", {"user": "ünï-çødé"}, {}, None),
    ("endpoint", "BETA", {"prompt": "hello", "messages": None}, {}, "/v1/completions"),
    ("tokens", "BETA", {"messages": [{"role": "user", "content": "word " * 2000}]}, {}, None),
    ("tools", "BETA", {"tools": TOOLS}, {}, None),
    ("images", "BETA", {"messages": IMAGE}, {}, None),
    ("task", "DELTA", {}, {"x-gatewise-task": "creative"}, None),
    ("messages", "BETA", {"max_tokens": 16}, {}, "/v1/messages"),
    ("messages", "BETA", {"input": "hello"}, {}, "/v1/responses"),
])
async def test_one_rule_per_match_kind(gw, name, key, body, headers, path):
    if path is not None:  # another inbound API: its own body
        body = {"model": "chat", **({"prompt": "hello"} if path == "/v1/completions" else body)}
        if path == "/v1/messages":
            body["messages"] = TEXT
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + path, json=body, headers={
                    "x-api-key" if path == "/v1/messages" else "authorization":
                    KEYS[key] if path == "/v1/messages" else f"Bearer {KEYS[key]}"}) as resp:
                status, got = resp.status, resp.headers
                assert status == 200, await resp.text()
    else:
        status, got, _ = await call(gw, key, body, headers)
    assert status == 200
    assert route(got) == (name, f"p-{name}/echo")
    assert got["x-gatewise-route"] == f"rule={name}; strategy=priority"


async def test_no_rule_matches_keeps_the_model_and_says_its_strategy(gw):
    status, headers, body = await call(gw)
    assert status == 200 and route(headers) == (None, "base/echo")
    assert headers["x-gatewise-route"] == "strategy=priority"
    assert body["model"] == "echo"


async def test_targets_subset_by_tier(gw):
    status, headers, _ = await call(gw, headers={"x-tier": "gold"})
    assert status == 200 and route(headers) == ("gold", "pa/echo")


async def test_first_matching_rule_wins(gw):
    # header (rule 0), tools (rule 6) and images (rule 7) all match: the first wins
    status, headers, _ = await call(gw, body={"tools": TOOLS, "messages": IMAGE},
                                    headers={"x-team": "blue"})
    assert route(headers) == ("header", "p-header/echo")
    status, headers, _ = await call(gw, body={"tools": TOOLS, "messages": IMAGE})
    assert route(headers) == ("tools", "p-tools/echo")
    # alpha's metadata rule (2) comes before tools (6)
    status, headers, _ = await call(gw, "ALPHA", body={"tools": TOOLS})
    assert route(headers) == ("meta", "p-meta/echo")


async def test_a_rule_naming_a_model_the_key_may_not_use_is_403(gw):
    status, _, body = await call(gw, "BETA", headers={"x-want": "secret"})
    assert status == 403
    assert body["error"]["code"] == "model_not_allowed" and body["error"]["param"] == "model"
    assert "'secret'" in body["error"]["message"] and "route rule 'secret'" in body["error"]["message"]
    # a key that may use every model goes through
    status, headers, _ = await call(gw, "ALPHA", headers={"x-want": "secret"})
    assert status == 200 and route(headers) == ("meta", "p-meta/echo")  # meta comes first


async def test_a_rule_cannot_launder_a_model_the_key_may_not_ask_for(gw):
    # gamma may not ask for to-tools, even though the tools rule would route it there
    status, _, body = await call(gw, "GAMMA", body={"model": "to-tools", "tools": TOOLS})
    assert status == 403 and body["error"]["code"] == "model_not_allowed"


async def test_tasks_are_checked_against_the_config_and_the_key(gw):
    status, _, body = await call(gw, headers={"x-gatewise-task": "poetry"})
    assert status == 400 and body["error"]["code"] == "invalid_task"
    assert body["error"]["param"] == "x-gatewise-task"
    # beta lists tasks: [coding]; creative is known but not beta's
    status, _, body = await call(gw, "BETA", body={"metadata": {"task": "creative"}})
    assert status == 403 and body["error"]["code"] == "task_not_allowed"
    assert body["error"]["param"] == "metadata.task"
    status, _, body = await call(gw, body={"metadata": {"task": ["coding"]}})
    assert status == 400 and body["error"]["code"] == "invalid_task"
    # delta lists no tasks: any known one
    status, headers, _ = await call(gw, "DELTA", headers={"x-gatewise-task": "creative"})
    assert status == 200 and route(headers) == ("task", "p-task/echo")
    # a rule's task applies when the client names none; the client's own wins
    status, headers, _ = await call(gw, "DELTA", headers={"x-want": "coding"})
    assert status == 200 and route(headers) == ("coding", "base/echo")


# --- hostile requests ---------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"x-team": "Blue"}, {"x-team": " blue x"}, {"x-team": ""}, {"x-team": "blue\u00e9"},
    {"x-team": "b" * 4000}, {"X-TEAM": "red"},
])
async def test_odd_header_values_do_not_match(gw, headers):
    status, got, _ = await call(gw, headers=headers)
    assert status == 200 and route(got) == (None, "base/echo")


async def test_a_header_sent_twice_matches_nothing(gw):
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={
                "model": "chat", "messages": TEXT}, headers=[
                ("authorization", f"Bearer {KEYS['BETA']}"), ("x-team", "blue"),
                ("x-team", "blue")]) as resp:
            assert resp.status == 200 and route(resp.headers) == (None, "base/echo")


@pytest.mark.parametrize("user", [17, ["u-17"], {"u-17": 1}, None, "", "u-17 ", "U-17"])
async def test_odd_user_values_do_not_match(gw, user):
    status, headers, body = await call(gw, body={"user": user})
    assert status in (200, 400)  # an upstream-bound check may refuse a non-string user
    if status == 200:
        assert route(headers) == (None, "base/echo")


async def test_request_metadata_is_not_key_metadata(gw):
    # beta's key says team: sales; the body's own metadata cannot make it research
    status, headers, _ = await call(gw, "BETA", body={"metadata": {"team": "research"}})
    assert status == 200 and route(headers) == (None, "base/echo")


async def test_a_task_cannot_pick_a_model_the_key_may_not_use(gw):
    # gamma may use chat and to-key only; the task rule sends creative requests to to-task
    status, _, body = await call(gw, "GAMMA", headers={"x-gatewise-task": "creative"})
    assert status == 403 and body["error"]["code"] == "model_not_allowed"


async def test_the_admin_key_calls_the_data_plane_as_admin(gw):
    status, headers, _ = await call(gw, "ADMIN", headers={"x-gatewise-task": "creative"})
    assert status == 200 and route(headers) == ("task", "p-task/echo")


# --- load-time checks ----------------------------------------------------------------

def test_config_problems_name_their_fields():
    with pytest.raises(ConfigError) as err:
        parse_config("""
providers: {a: {type: mock}}
models: {m: {targets: [{provider: a, model: echo}]}}
keys: [{name: k, key: "0123456789abcdef0"}]
routes:
  - {match: {header: {authorization: x}}, model: m}
  - {match: {key: nobody, endpoint: batch, prompt_tokens: {min: 5, max: 1}}, model: zz}
  - {match: {model: "gpt-*"}, targets: [b/echo], strategy: {name: affinity, key_from: "x"}}
  - {match: {}}
  - {name: "two words", model: m, task: Coding}
""", {})
    assert err.value.problems == [
        "routes[0].match.header.authorization: carries credentials: match on key or metadata "
        "instead",
        "routes[1].match.key: unknown key 'nobody'",
        "routes[1].match.endpoint: must be one of chat, completions, embeddings, responses, "
        "messages; got 'batch'",
        "routes[1].match.prompt_tokens: min (5) is above max (1)",
        "routes[1].model: unknown model 'zz'",
        "routes[2].match.model: 'gpt-*' matches no model",
        "routes[2].strategy.key_from: must be user, key or header:NAME (a header name), got 'x'",
        "routes[2].targets[0]: 'b/echo' selects no target of the models it may apply to "
        "(provider/model, a provider, or tier:NAME)",
        "routes[3]: needs at least one of model, targets, strategy or task",
        "routes[4].name: letters, digits, '_', '.', ':' and '-' only (at most 64): it goes "
        "into a response header",
        "routes[4].task: must be a task kind (lower-case letters, digits, '_', '-', '.')",
    ]


def test_admin_is_a_reserved_key_name_when_the_admin_key_is_set():
    text = """
admin: {key: "admin-key-0123456789"}
providers: {a: {type: mock}}
models: {m: {targets: [{provider: a, model: echo}]}}
keys: [{name: admin, key: "0123456789abcdef0"}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, {})
    assert err.value.problems == ["keys[0].name: 'admin' is the admin key's name on the data "
                                  "plane: choose another"]


def test_rule_values_are_data_never_source():
    from types import SimpleNamespace

    from proxy.engine.rules import RuleTable

    evil = "x') or __import__('os').system('true') or ('"
    config = parse_config(f"""
providers: {{a: {{type: mock}}}}
models: {{m: {{targets: [{{provider: a, model: echo}}]}}}}
keys: [{{name: "{evil}", key: "0123456789abcdef0", metadata: {{"{evil}": "{evil}"}}}}]
routes:
  - name: r1
    match: {{header: {{x-evil: "{evil}"}}, user: "{evil}", key: "{evil}",
             metadata: {{"{evil}": "{evil}"}}}}
    task: coding
""", {})
    table = RuleTable(config.routes)
    assert "__import__" not in table.source and "x-evil" not in table.source
    key = config.keys[0]

    class Headers(dict):
        def getall(self, name):
            return [self[name]] if name in self else []

    def ex(user, header):
        return SimpleNamespace(model=config.models["m"], key=key, body={"user": user},
                               http=SimpleNamespace(path="/v1/chat/completions",
                                                    headers=Headers({"x-evil": header})),
                               task=None)

    assert table.match(ex(evil, evil)) is config.routes[0]
    assert table.match(ex(evil, "x")) is None
    assert table.match(ex("x", evil)) is None


async def test_streams_carry_the_route_header(gw):
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={
                "model": "chat", "stream": True, "messages": TEXT}, headers={
                "authorization": f"Bearer {KEYS['DELTA']}", "x-team": "blue"}) as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-route"] == "rule=header; strategy=priority"
            assert (await resp.read()).endswith(b"data: [DONE]\n\n")


def test_a_client_key_may_not_be_the_admin_key():
    with pytest.raises(ConfigError) as err:
        parse_config("""
admin: {key: "admin-key-0123456789"}
providers: {a: {type: mock}}
models: {m: {targets: [{provider: a, model: echo}]}}
keys: [{name: k, key: "admin-key-0123456789"}]
""", {})
    assert err.value.problems == ["keys[0]: is the same key as admin.key: a client key must "
                                  "not open the admin API"]
