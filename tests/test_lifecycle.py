"""Stopping cleanly: `gatewise serve` as a real process, signalled mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.fakes.openai_upstream import API_KEY, Reply

ROOT = Path(__file__).parents[1]
LONG = " ".join(f"w{i}" for i in range(400))  # ~40 s at 0.1 s a chunk: never ends by itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`python -m proxy serve` in a subprocess, its log lines collected."""

    def __init__(self, config: Path, *args: str, session: bool = False) -> None:
        self.config, self.args, self.session = config, args, session
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []

    async def start(self) -> "Served":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "serve", "--config", str(self.config), "--port",
            str(self.port), *self.args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=self.session)
        self._reader = asyncio.ensure_future(self._read())
        async with asyncio.timeout(15):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return self
                except OSError:
                    assert self.proc.returncode is None, self.text
                    await asyncio.sleep(0.05)

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode())

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 15) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def served(tmp_path):
    started: list[Served] = []

    async def start(config: str, *args: str, session: bool = False) -> Served:
        path = tmp_path / "gatewise.yaml"
        path.write_text(config)
        server = Served(path, *args, session=session)
        started.append(server)
        return await server.start()

    yield start
    for server in started:
        await server.kill()


def config(fake_url: str, ledger: Path, grace: str) -> str:
    return f"""
server: {{shutdown_timeout: {grace}}}
providers: {{up: {{type: openai, base_url: "{fake_url}/v1", api_key: {API_KEY}}}}}
models: {{m: {{targets: [{{provider: up, model: gpt-4o, price: {{input: 1, output: 1}}}}]}}}}
state: {{ledger: "sqlite:{ledger}"}}
telemetry: {{log_format: text}}
"""


async def open_stream(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    resp = await http.post(url + "/v1/chat/completions", json={
        "model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    assert resp.status == 200
    assert b"w1" in await resp.content.readuntil(b"w1")
    return resp


def ledger_states(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT state, completion_tokens > 0, cost > 0 FROM spend").fetchall()


async def test_sigterm_ends_open_streams_at_the_deadline_with_an_error_event(
        fake, served, tmp_path):
    fake.default = Reply(text=LONG, chunk_delay=0.1)
    gw = await served(config(fake.url, tmp_path / "ledger.db", "1s"))
    async with aiohttp.ClientSession() as http:
        streams = [await open_stream(http, gw.url) for _ in range(2)]
        began = time.monotonic()
        gw.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
            await http.get(gw.url + "/health/live")
        tails = [await resp.read() for resp in streams]
        took = time.monotonic() - began
    for tail in tails:
        last = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert last.startswith(b"data: {\"error\"")  # a clean last event, not a bare close
        error = orjson.loads(last[len(b"data: "):])["error"]
        assert error["code"] == "server_shutting_down"
        assert b"[DONE]" not in tail
    assert 0.9 < took < 4
    assert await gw.wait() == 0
    assert "draining 2 request(s) in flight (2 stream(s)) for up to 1s" in gw.text
    assert "0 request(s) finished, 2 cut" in gw.text
    assert "Traceback" not in gw.text
    assert ledger_states(tmp_path / "ledger.db") == [("done", 1, 1)] * 2  # settled and billed


async def test_streams_that_end_within_the_drain_finish_normally(fake, served, tmp_path):
    fake.default = Reply(text="a b c d e f g h", chunk_delay=0.1)
    gw = await served(config(fake.url, tmp_path / "ledger.db", "10s"))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(gw.url + "/v1/chat/completions", json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]})
        await resp.content.readuntil(b"data:")
        began = time.monotonic()
        gw.signal(signal.SIGTERM)
        body = await resp.read()
    assert body.endswith(b"data: [DONE]\n\n")
    assert await gw.wait() == 0
    assert time.monotonic() - began < 5  # no waiting out the whole 10 s
    assert "1 request(s) finished, 0 cut" in gw.text


async def test_a_second_signal_exits_at_once_and_quietly(fake, served, tmp_path):
    fake.default = Reply(text=LONG, chunk_delay=0.1)
    gw = await served(config(fake.url, tmp_path / "ledger.db", "30s"))
    async with aiohttp.ClientSession() as http:
        stream = await open_stream(http, gw.url)
        gw.signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        assert gw.proc.returncode is None  # draining
        began = time.monotonic()
        gw.signal(signal.SIGINT)
        code = await gw.wait(5)
        stream.close()
    assert time.monotonic() - began < 2
    assert code == 128 + signal.SIGINT
    assert "Traceback" not in gw.text and "KeyboardInterrupt" not in gw.text
    assert "SIGINT again: exiting now" in gw.text


async def test_sighup_never_kills_the_process(fake, served, tmp_path):
    gw = await served(config(fake.url, tmp_path / "ledger.db", "5s"))
    gw.signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert gw.proc.returncode is None
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/health/live") as resp:
            assert resp.status == 200
    assert "config reload (SIGHUP): unchanged" in gw.text  # it reloads (nothing changed)
    gw.signal(signal.SIGTERM)
    assert await gw.wait() == 0


async def test_a_public_bind_without_client_keys_refuses_to_start(fake, tmp_path):
    path = tmp_path / "open.yaml"
    text = (f"providers: {{up: {{type: openai, base_url: '{fake.url}/v1', api_key: x}}}}\n"
            "models: {m: {targets: [{provider: up, model: gpt-4o}]}}\n")
    path.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--config", str(path), "--host", "0.0.0.0",
        "--port", str(free_port()), cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:  # it served: the open relay this test is about
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2
    assert err.decode().startswith("gatewise: refusing to serve on 0.0.0.0 without client keys")
    assert len(err.decode().strip().splitlines()) == 1


async def test_allow_unauthenticated_lets_a_public_bind_start(fake, served):
    gw = await served(f"""
server: {{host: 0.0.0.0, allow_unauthenticated: true}}
providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: x}}}}
models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
telemetry: {{log_format: text}}
""")
    assert "serving WITHOUT authentication on 0.0.0.0" in gw.text
    gw.signal(signal.SIGTERM)
    assert await gw.wait() == 0


async def test_start_up_lines_say_which_models_can_answer_and_why_not(served, fake):
    gw = await served(f"""
providers:
  up: {{type: openai, base_url: "{fake.url}/v1", api_key: x}}
  gone: {{type: openai, api_key: "${{GATEWISE_TEST_UNSET_KEY}}"}}
  local: {{type: mock}}
models:
  a: {{targets: [{{provider: up, model: gpt-4o}}]}}
  b: {{targets: [{{provider: gone, model: gpt-4o}}]}}
  c: {{targets: [{{provider: gone, model: gpt-4o}}], fallbacks: [d]}}
  d: {{targets: [{{provider: local, model: echo}}]}}
telemetry: {{log_format: text}}
""")
    gw.signal(signal.SIGTERM)
    await gw.wait()
    assert "3 of 4 model(s) can answer: a, c, d" in gw.text
    assert ("model 'b' cannot answer: provider 'gone' is disabled (environment variable "
            "GATEWISE_TEST_UNSET_KEY is not set)") in gw.text
    assert "serving 4 model(s)" not in gw.text


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def workers_config(fake_url: str) -> str:
    from tests.test_redis_stores import require

    require("127.0.0.1", 6379, "Redis")
    return f"""
server: {{shutdown_timeout: 5s}}
providers: {{up: {{type: openai, base_url: "{fake_url}/v1", api_key: x}}}}
models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
state: {{backend: redis, url: "redis://127.0.0.1:6379/0", prefix: "gwlife:{os.getpid()}:",
         instances: 2}}
telemetry: {{log_format: text}}
"""


async def two_workers(gw: Served) -> list[int]:
    async with asyncio.timeout(15):
        while len(pids := children(gw.proc.pid)) < 2:
            await asyncio.sleep(0.05)
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_workers_exit_when_the_supervisor_dies(fake, served):
    gw = await served(workers_config(fake.url), "--workers", "2")
    pids = await two_workers(gw)
    gw.proc.kill()  # SIGKILL: no chance to forward anything
    await gw.proc.wait()
    try:
        async with asyncio.timeout(10):
            while any(alive(pid) for pid in pids):
                await asyncio.sleep(0.05)
    finally:  # were they orphaned (the bug), they must not outlive the test
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_supervisor_survives_sighup_and_forwards_one_stop(fake, served):
    gw = await served(workers_config(fake.url), "--workers", "2", session=True)
    pids = await two_workers(gw)
    async with asyncio.timeout(15):  # both past their first line: SIGHUP is theirs to take
        while gw.text.count(f" on {gw.url} from ") < 2:
            await asyncio.sleep(0.05)
    gw.signal(signal.SIGHUP)
    async with asyncio.timeout(15):
        while gw.text.count("config reload (SIGHUP): unchanged") < 2:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert gw.proc.returncode is None and all(alive(pid) for pid in pids)
    assert gw.text.count("config reload (SIGHUP): unchanged") == 2  # each worker, once
    os.killpg(gw.proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
    assert await gw.wait() == 0
    assert gw.text.count("draining 0 request(s)") == 2  # each worker drained once...
    assert "again: exiting now" not in gw.text  # ...and was not told twice
    assert "Traceback" not in gw.text


async def test_admin_port_keeps_admin_and_metrics_off_the_client_port(fake, served):
    admin_port = free_port()
    gw = await served(f"""
server: {{admin_port: {admin_port}}}
providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: x}}}}
models: {{m: {{targets: [{{provider: up, model: gpt-4o}}]}}}}
admin: {{key: admin-key-0123456789}}
telemetry: {{log_format: text}}
""")
    admin = f"http://127.0.0.1:{admin_port}"
    headers = {"authorization": "Bearer admin-key-0123456789"}
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/admin/targets"):
            async with http.get(gw.url + path, headers=headers) as resp:
                assert resp.status == 404
            async with http.get(admin + path, headers=headers) as resp:
                assert resp.status == 200
        async with http.get(gw.url + "/health/ready") as resp:
            assert resp.status == 200  # probes stay where the load balancer looks
    assert f"admin routes and /metrics on http://127.0.0.1:{admin_port}" in gw.text
    gw.signal(signal.SIGTERM)
    assert await gw.wait() == 0


async def test_metrics_under_workers_are_the_sum_over_all_workers(served):
    from tests.test_redis_stores import require

    require("127.0.0.1", 6379, "Redis")
    gw = await served(f"""
providers: {{local: {{type: mock}}}}
models: {{m: {{targets: [{{provider: local, model: echo}}]}}}}
state: {{backend: redis, url: "redis://127.0.0.1:6379/0", prefix: "gwmetrics:{os.getpid()}:",
         instances: 2}}
telemetry: {{log_format: text}}
""", "--workers", "2")
    await two_workers(gw)
    await asyncio.sleep(0.5)  # both workers listening
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    totals = []
    for _ in range(20):  # a new connection each: the kernel spreads them over the workers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) \
                as http, http.post(gw.url + "/v1/chat/completions", json=chat) as resp:
            assert resp.status == 200
    for _ in range(6):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) \
                as http, http.get(gw.url + "/metrics") as resp:
            text = await resp.text()
        totals.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith('gatewise_requests_total{endpoint="chat"')))
    assert totals == [20.0] * 6  # never one worker's share, never a counter "reset"
    gw.signal(signal.SIGTERM)
    assert await gw.wait() == 0


async def test_a_stream_in_another_client_format_ends_in_its_own_error_event(
        fake, served, tmp_path):
    # /v1/messages speaks Anthropic's stream grammar: the shutdown's last event is
    # Anthropic's `event: error`, not an OpenAI `data: {"error": ...}` frame.
    fake.default = Reply(text=LONG, chunk_delay=0.1)
    gw = await served(config(fake.url, tmp_path / "ledger.db", "1s"))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(gw.url + "/v1/messages", json={
            "model": "m", "max_tokens": 1000, "stream": True,
            "messages": [{"role": "user", "content": "go"}]},
            headers={"anthropic-version": "2023-06-01"})
        assert resp.status == 200
        await resp.content.readuntil(b"w1")
        gw.signal(signal.SIGTERM)
        tail = await resp.read()
    last = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: "), last
    payload = orjson.loads(last.split(b"data: ", 1)[1])
    assert payload["type"] == "error" and "shutting down" in payload["error"]["message"]
    assert await gw.wait() == 0
    assert ledger_states(tmp_path / "ledger.db") == [("done", 1, 1)]
