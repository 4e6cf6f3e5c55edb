"""Live reload under load: valid files are put in place whole for the next request,
invalid ones are refused with every problem while traffic goes on untouched, and
requests in flight (streams especially) finish on the config they started with."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.server.app import build_app
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from tests.fakes.server import LoopbackServer

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {ADMIN}"}
WORDS = " ".join(f"w{i}" for i in range(24))

BASE = """
admin: {{key: "{admin}"}}
providers:
  a: {{type: mock, chunk_delay_ms: 2}}
  b: {{type: mock, chunk_delay_ms: 2}}
  slow: {{type: mock, chunk_delay_ms: 40}}
models:
  m: {{targets: [{{provider: {target}, model: echo}}]}}
  long: {{targets: [{{provider: slow, model: echo}}]}}
{extra}
"""
#: each refused for its own reason (field problems, YAML, restart-only, unreadable)
INVALID = [
    ("models: {m: {targets: [{provider: nowhere, model: echo}]}}\nproviders: {a: {type: mock}}",
     "models.m.targets[0].provider: unknown provider 'nowhere'"),
    ("providers: {a: {type: mock}\nmodels: [", "invalid YAML"),
    (None, "server.port: cannot change while gatewise runs"),
    ("providers: {a: {type: mock, colour: red}}\nmodels: {m: {targets: "
     "[{provider: a, model: echo}]}}", "providers.a.colour: unknown field"),
]


def write(path: Path, target: str, extra: str = "") -> None:
    path.write_text(BASE.format(admin=ADMIN, target=target, extra=extra))


@pytest.fixture
async def served(tmp_path):
    """A gateway serving a config file; `served.path` is the file."""
    path = tmp_path / "gatewise.yaml"
    write(path, "a")
    server = LoopbackServer(build_app(load_config(path)), handler_cancellation=True)
    await server.start()
    server.path = path
    yield server
    await server.close()


async def reload(http: aiohttp.ClientSession, url: str, headers=AUTH) -> tuple[int, dict]:
    async with http.post(url + "/admin/reload", headers=headers) as resp:
        return resp.status, await resp.json()


async def chat(http: aiohttp.ClientSession, url: str, model: str = "m", stream: bool = False,
               text: str = "hello") -> tuple[int, str | None, bytes]:
    async with http.post(url + "/v1/chat/completions", json={
            "model": model, "stream": stream,
            "messages": [{"role": "user", "content": text}]}) as resp:
        return resp.status, resp.headers.get("x-gatewise-target"), await resp.read()


def complete(body: bytes, text: str) -> bool:
    """A whole stream: every word in order, the finish chunk, [DONE]."""
    words = [orjson.loads(line[6:])["choices"][0]["delta"].get("content", "")
             for line in body.split(b"\n\n") if line.startswith(b"data: {")
             and orjson.loads(line[6:]).get("choices")]
    return "".join(words) == text and body.endswith(b"data: [DONE]\n\n")


async def test_twenty_reloads_under_load_drop_nothing(served):
    url, path = served.url, served.path
    failures: list[str] = []
    served_requests = 0
    stop = asyncio.Event()

    async def client(n: int) -> None:
        nonlocal served_requests
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                stream = n % 2 == 1
                status, _, body = await chat(http, url, stream=stream, text="one two three")
                if status != 200 or (stream and not complete(body, "one two three")):
                    failures.append(f"{status} {body[:200]!r}")
                served_requests += 1

    clients = [asyncio.create_task(client(n)) for n in range(32)]
    async with aiohttp.ClientSession() as http:
        long_text = WORDS
        before = asyncio.create_task(chat(http, url, "long", stream=True, text=long_text))
        await asyncio.sleep(0.15)  # the stream is under way on generation 1
        target = "a"
        for i in range(20):
            if i % 2 == 0:
                target = "b" if target == "a" else "a"
                write(path, target, extra=f"# change {i}")
                status, body = await reload(http, url)
                assert status == 200 and body["status"] == "applied", body
                assert body["changes"]["targets"] == {
                    "added": [f"{target}/echo"],
                    "removed": [f"{'a' if target == 'b' else 'b'}/echo"]}
            else:
                text, problem = INVALID[(i // 2) % len(INVALID)]
                if text is None:
                    path.write_text(BASE.format(admin=ADMIN, target=target,
                                                extra="server: {port: 1}"))
                else:
                    path.write_text(text)
                status, body = await reload(http, url)
                assert status == 422 and body["status"] == "refused", body
                assert any(problem in p for p in body["problems"]), body["problems"]
            # the very next request runs on whatever the last answer said is in place
            status, served_by, _ = await chat(http, url)
            assert status == 200 and served_by == f"{target}/echo"
            await asyncio.sleep(0.05)
        status, served_by, body = await before
    stop.set()
    await asyncio.gather(*clients)
    assert failures == [] and served_requests > 200
    assert status == 200 and served_by == "slow/echo" and complete(body, WORDS)
    gateway = served.app[GATEWAY]
    assert gateway.current.generation == 11
    metrics = gateway.metrics.reloads.values
    assert metrics == {("ok",): 10.0, ("invalid",): 10.0}


async def test_a_stream_finishes_on_a_provider_the_reload_removed(served):
    async with aiohttp.ClientSession() as http:
        stream = asyncio.create_task(chat(http, served.url, "long", stream=True, text=WORDS))
        await asyncio.sleep(0.2)
        served.path.write_text(textwrap.dedent(f"""
            admin: {{key: "{ADMIN}"}}
            providers: {{a: {{type: mock, chunk_delay_ms: 2}}}}
            models: {{m: {{targets: [{{provider: a, model: echo}}]}}}}
        """))
        status, body = await reload(http, served.url)
        assert status == 200 and body["changes"]["models"] == {"removed": ["long"]}
        assert body["changes"]["providers"] == {"removed": ["b", "slow"]}
        assert (await chat(http, served.url, "long"))[0] == 404  # new requests: gone
        status, served_by, raw = await stream
    assert status == 200 and served_by == "slow/echo" and complete(raw, WORDS)


async def test_a_reload_storm_coalesces_and_answers_every_caller(served):
    async with aiohttp.ClientSession() as http:
        write(served.path, "b")
        answers = await asyncio.gather(*(reload(http, served.url) for _ in range(40)),
                                       *(chat(http, served.url) for _ in range(40)))
        reloads, chats = answers[:40], answers[40:]
        assert all(status == 200 for status, _ in reloads)
        assert {body["status"] for _, body in reloads} <= {"applied", "unchanged"}
        assert all(status == 200 for status, _, _ in chats)
        generation = served.app[GATEWAY].current.generation
        assert generation == 2  # one change, applied once; the rest found nothing new
        assert (await chat(http, served.url))[1] == "b/echo"


async def test_a_file_that_disappears_is_refused_and_the_gateway_serves_on(served):
    async with aiohttp.ClientSession() as http:
        served.path.unlink()
        status, body = await reload(http, served.url)
        assert status == 422 and "cannot read config file" in body["problems"][0]
        assert (await chat(http, served.url))[:2] == (200, "a/echo")
        write(served.path, "b")
        status, body = await reload(http, served.url)
        assert status == 200 and (await chat(http, served.url))[1] == "b/echo"


async def test_reload_needs_the_admin_key(served):
    async with aiohttp.ClientSession() as http:
        write(served.path, "b")
        assert (await reload(http, served.url, headers={}))[0] == 401
        assert (await reload(http, served.url, headers={"authorization": "Bearer nope"}))[0] \
            == 401
        assert (await chat(http, served.url))[1] == "a/echo"  # nothing was reloaded
        status, body = await reload(http, served.url, headers=AUTH | {"x": "y"})
        assert status == 200
        async with http.post(served.url + "/admin/reload?all=maybe", headers=AUTH) as resp:
            assert resp.status == 400


async def test_a_gateway_not_started_from_a_file_has_nothing_to_reload(start_gateway):
    gw = await start_gateway(BASE.format(admin=ADMIN, target="a", extra=""))
    async with aiohttp.ClientSession() as http:
        status, body = await reload(http, gw.url)
    assert status == 422 and body["problems"] == [
        "this gateway's config was not read from a file: there is nothing to reload"]


async def test_an_unchanged_file_changes_nothing(served):
    async with aiohttp.ClientSession() as http:
        status, body = await reload(http, served.url)
    assert status == 200 and body["status"] == "unchanged" and body["generation"] == 1


PAGE = """
admin: {{key: "{admin}"}}
providers:
  a: {{type: mock}}
  b: {{type: mock}}
{extra}
models:
  m:
{slo}
    targets: [{{provider: {target}, model: echo}}]
"""


async def test_the_page_alerts_and_slos_follow_a_reload(tmp_path):
    path = tmp_path / "gatewise.yaml"
    path.write_text(PAGE.format(admin=ADMIN, extra="", slo="", target="a"))
    async with LoopbackServer(build_app(load_config(path))) as server, \
            aiohttp.ClientSession() as http:
        live = server.app[GATEWAY]
        hub, watch, stats = live.alerts, live.watch, live.live
        assert (await chat(http, server.url))[0] == 200
        secret = "sk-rotated-in-by-a-reload-0123"
        path.write_text(PAGE.format(
            admin=ADMIN, target="b", slo="    slo: {availability: 99%, window: 5m}",
            extra=f'  extra: {{type: openai, base_url: "http://127.0.0.1:9/v1", '
                  f'api_key: "{secret}"}}'))
        status, body = await reload(http, server.url)
        assert status == 200, body
        assert live.alerts is hub and live.watch is watch and live.live is stats  # kept
        assert "b/echo" in stats.targets and "a/echo" not in stats.targets
        assert watch.config is live.current.config and watch.slo is live.slo
        assert [s.config.subject for s in live.slo.states] == ["m"]
        assert live.metrics.gauges and live.metrics.on_record is not None
        assert hub.redact(f"key {secret}") == "key [redacted]"  # alerts hide the new key
        watch.build(time.time())
        targets = str(orjson.loads(watch.body)["targets"])
        assert "b/echo" in targets and "a/echo" not in targets


async def test_the_admin_key_of_a_served_page_needs_a_restart(served):
    async with aiohttp.ClientSession() as http:
        served.path.write_text(served.path.read_text().replace(ADMIN, ADMIN + "-new"))
        status, body = await reload(http, served.url)
        assert status == 422 and body["problems"][0].startswith("admin.key: cannot change")
        served.path.write_text(served.path.read_text() + "\nalerts: {cooldown: 1m}\n")
        status, body = await reload(http, served.url)
        assert "alerts: cannot change while gatewise runs; restart gatewise to apply it" \
            in body["problems"]


async def test_a_reloaded_secret_is_redacted_from_the_log(served):
    import io
    import logging

    from proxy.server.logs import log_handler

    out = io.StringIO()
    handler = log_handler("text", [ADMIN], out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        secret = "sk-fresh-from-the-reload-0123456"
        served.path.write_text(BASE.format(admin=ADMIN, target="a", extra="").replace("  a: {type: mock, chunk_delay_ms: 2}",
                      f'  a: {{type: mock, chunk_delay_ms: 2}}\n  o: {{type: openai, '
                      f'base_url: "http://127.0.0.1:9/v1", api_key: "{secret}"}}'))
        async with aiohttp.ClientSession() as http:
            status, body = await reload(http, served.url)
        assert status == 200 and body["changes"]["providers"] == {"added": ["o"]}, body
        logging.getLogger("gatewise.test").warning(f"an upstream quoted {secret} back")
        handler.flush()
    finally:
        root.removeHandler(handler)
    assert secret not in out.getvalue() and "[redacted]" in out.getvalue()


async def test_reloads_that_swap_http_upstreams_under_load_drop_nothing(tmp_path):
    """The same over HTTP: each valid reload changes the provider the model uses (its
    connections too), and a changed provider's transport is only closed after the
    requests still using it have ended."""
    from tests.fakes.openai_upstream import API_KEY, FakeOpenAI, Reply

    fakes = [FakeOpenAI(), FakeOpenAI()]
    servers = [LoopbackServer(f.app, handler_cancellation=True) for f in fakes]
    for server in servers:
        await server.start()
    for fake in fakes:
        fake.default = Reply(text="one two three four", chunk_delay=0.01)
    path = tmp_path / "gatewise.yaml"

    def http_config(n: int, latency: int) -> str:
        return (f'admin: {{key: "{ADMIN}"}}\nproviders:\n'
                f'  up: {{type: openai, base_url: "{servers[n].url}/v1", api_key: {API_KEY}, '
                f'timeouts: {{connect: {latency}s}}}}\n'
                "models: {m: {targets: [{provider: up, model: gpt-4o}]}}\n")

    path.write_text(http_config(0, 5))
    failures: list[str] = []
    stop = asyncio.Event()
    async with LoopbackServer(build_app(load_config(path)), handler_cancellation=True) as gw:
        async def client(n: int) -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    stream = n % 2 == 1
                    status, _, body = await chat(http, gw.url, stream=stream)
                    if status != 200 or (stream and not complete(body, "one two three four")):
                        failures.append(f"{status} {body[:200]!r}")

        clients = [asyncio.create_task(client(n)) for n in range(32)]
        async with aiohttp.ClientSession() as http:
            for i in range(20):
                if i % 2 == 0:
                    path.write_text(http_config((i // 2 + 1) % 2, 6 + i))  # another upstream
                    status, body = await reload(http, gw.url)
                    assert status == 200 and body["changes"]["providers"] == {
                        "changed": ["up"]}, body
                else:
                    path.write_text(http_config(0, 5).replace("api_key:", "api_kee:"))
                    status, body = await reload(http, gw.url)
                    assert status == 422 and body["problems"], body
                await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*clients)
    for server in servers:
        await server.close()
    assert failures == []
    assert all(len(f.requests) > 20 for f in fakes)


async def test_a_shutdown_ends_the_streams_of_every_generation(served):
    """A stream begun before a reload runs on the old generation: a drain's deadline
    still reaches it (the process's requests are those of every generation)."""
    from proxy.server.serve import shutting_down

    live = served.app[GATEWAY]
    async with aiohttp.ClientSession() as http:
        stream = asyncio.create_task(chat(http, served.url, "long", stream=True, text=WORDS))
        await asyncio.sleep(0.2)
        write(served.path, "b")
        assert (await reload(http, served.url))[0] == 200
        assert live.current.generation == 2 and len(live.open) == 1
        assert live.in_flight == 1  # counted on the generation it runs on
        assert live.interrupt(shutting_down()) == 1
        status, _, raw = await stream
    assert status == 200 and b"server_shutting_down" in raw and not complete(raw, WORDS)


async def test_a_reload_never_opens_a_public_gateway(tmp_path):
    path = tmp_path / "gatewise.yaml"
    keyed = BASE.format(admin=ADMIN, target="a", extra="keys: [{name: app, key: app-key-0123456789abcd}]")
    path.write_text(keyed)
    async with LoopbackServer(build_app(load_config(path))) as server, \
            aiohttp.ClientSession() as http:
        server.app[GATEWAY].host = "0.0.0.0"  # as `gatewise serve --host 0.0.0.0` says
        write(path, "a")  # the same, without its keys
        status, body = await reload(http, server.url)
        assert status == 422 and body["problems"][0].startswith(
            "keys: without client keys gatewise would serve 0.0.0.0 to anyone")
        write(path, "a", extra="server: {allow_unauthenticated: true}")
        status, body = await reload(http, server.url)
        assert status == 200  # said so in the file: an authenticating proxy in front
