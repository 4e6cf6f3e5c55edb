"""Three gatewise processes on one Redis and one PostgreSQL: limits and budgets
hold across them, spend survives a Redis flush, an outage degrades as documented
(docs/deployment.md) and recovers, and `--workers 2` serves one port.

The tests run in file order on one set of processes; the outage test is last.
Redis is this file's own `redis-server` on a free port (stopped and restarted
mid-run); PostgreSQL gets a database of its own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis

from proxy.server.cli import main as cli_main
from proxy.state.stores_redis import RedisBudgetStore, RedisState
from tests.test_redis_stores import free_port, require

ROOT = Path(__file__).resolve().parent.parent
KEYS = {name: f"sk-gw-{name}-0123456789abcdef" for name in ("rl", "bud", "spend", "out")}
PRICE = "price: {input: 1000, output: 1000}"  # a token costs $0.001
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
SPEND_COST = 0.012  # 9 prompt + 3 completion tokens


def config_text(redis_port: int, dsn: str, instances: int = 3) -> str:
    keys = "\n".join(f"  - {{name: {n}, key: {k}{extra}}}" for n, k, extra in (
        ("rl", KEYS["rl"], ", rpm: 60"),
        ("bud", KEYS["bud"], ", budget: {usd: 10.5, per: day}"),
        ("spend", KEYS["spend"], ", budget: {usd: 0.045, per: day}"),
        ("out", KEYS["out"], ", rpm: 30")))
    return f"""
providers:
  fast: {{type: mock}}
  slow: {{type: mock, latency_ms: 300}}
models:
  echo: {{targets: [{{provider: fast, model: echo, {PRICE}}}]}}
  slow: {{targets: [{{provider: slow, model: echo, {PRICE}}}]}}
keys:
{keys}
state:
  backend: redis
  url: redis://127.0.0.1:{redis_port}/0
  prefix: "gwscale:"
  instances: {instances}
  ledger: {dsn}
"""


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis.Redis(port=self.port).ping(), "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


def wait_for(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 — not up yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout}s")
        time.sleep(0.05)


def live(port: int) -> bool:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1) as resp:
        return resp.status == 200


def spawn(config: Path, port: int, *extra: str) -> subprocess.Popen:
    """Logs go to a file next to the config (a pipe nobody reads would fill and block)."""
    with open(config.parent / f"gatewise-{port}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--host",
             "127.0.0.1", "--port", str(port), *extra], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("redis-server") is None:
        require("127.0.0.1", 1, "redis-server (binary)")
    require("127.0.0.1", 5432, "PostgreSQL")
    server = RedisServer()
    server.start()
    db = f"gatewise_test_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'CREATE DATABASE "{db}"'],
                   check=True, capture_output=True)
    dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
    config = tmp_path_factory.mktemp("scale") / "gatewise.yaml"
    config.write_text(config_text(server.port, dsn))
    ports = [free_port() for _ in range(3)]
    procs = [spawn(config, p) for p in ports]
    try:
        for port in ports:
            wait_for(lambda port=port: live(port), f"gatewise on {port}")
        yield {"ports": ports, "redis": server, "dsn": dsn, "config": config}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        server.stop()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], capture_output=True,
                       check=False)


async def post(http, port, key, body=CHAT):
    async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEYS[key]}"}) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_rpm_60_over_three_instances_admits_at_most_60_plus_the_refill(cluster):
    ports = cluster["ports"]
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(post(http, ports[i % 3], "rl") for i in range(300)))
    elapsed = time.monotonic() - started
    statuses = [r[0] for r in results]
    # GCRA refills continuously: 60/min is one more request per second of the run.
    assert 60 <= statuses.count(200) <= 60 + int(elapsed) + 1, (statuses.count(200), elapsed)
    assert statuses.count(429) == 300 - statuses.count(200)
    refused = next(r for r in results if r[0] == 429)
    assert refused[1]["error"]["code"] == "gateway_rate_limit"
    assert int(refused[2]["retry-after"]) >= 1


async def test_a_budget_for_ten_holds_under_fifty_concurrent_requests(cluster):
    ports = cluster["ports"]
    big = {**CHAT, "model": "slow", "max_tokens": 1000}  # up to $1.009 each; $10.5 fits 10
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(post(http, ports[i % 3], "bud", big) for i in range(50)))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    assert next(r for r in results if r[0] == 429)[1]["error"]["code"] == "budget_exceeded"


async def test_a_reconcile_retried_twice_counts_once(cluster):
    async with aiohttp.ClientSession() as http:
        status, _, _ = await post(http, cluster["ports"][0], "spend")
    assert status == 200
    conn = await asyncpg.connect(cluster["dsn"])
    rid = await conn.fetchval("SELECT id FROM spend WHERE key_name = 'spend'")
    await conn.close()
    state = RedisState(f"redis://127.0.0.1:{cluster['redis'].port}/0", "gwscale:")
    await state.start()
    scope = f"key:spend:{time.strftime('%Y-%m-%d', time.gmtime())}"
    store = RedisBudgetStore(state)
    deadline = time.monotonic() + 5
    while float(await state.client.hget(state.key("b", scope), "spent") or 0) < SPEND_COST:
        assert time.monotonic() < deadline  # the instance settles in the background
        await asyncio.sleep(0.02)
    assert await store.settle_async([scope], SPEND_COST, rid) is False  # retried
    assert await store.settle_async([scope], SPEND_COST, rid) is False  # and again
    assert float(await state.client.hget(state.key("b", scope), "spent")) == \
        pytest.approx(SPEND_COST)
    await state.close()


async def test_spend_survives_a_redis_flush(cluster):
    ports = cluster["ports"]
    async with aiohttp.ClientSession() as http:
        for port in ports[1:]:
            assert (await post(http, port, "spend"))[0] == 200  # $0.036 spent in all
        client = redis.asyncio.Redis(port=cluster["redis"].port)
        await client.flushall()
        scope = f"gwscale:b:key:spend:{time.strftime('%Y-%m-%d', time.gmtime())}"
        deadline = time.monotonic() + 5
        while await client.hget(scope, "seeded") is None:  # an instance noticed, rebuilt
            assert time.monotonic() < deadline, "budgets were not rebuilt from PostgreSQL"
            await asyncio.sleep(0.05)
        assert float(await client.hget(scope, "spent")) == pytest.approx(3 * SPEND_COST)
        await asyncio.sleep(0.6)  # every instance has ticked: still counted once
        assert float(await client.hget(scope, "spent")) == pytest.approx(3 * SPEND_COST)
        await client.aclose()
        status, body, _ = await post(http, ports[2], "spend")  # 0.036 + 0.014 > 0.045
    assert status == 429 and body["error"]["code"] == "budget_exceeded"


async def test_redis_outage_degrades_as_documented_and_recovers(cluster):
    ports, server = cluster["ports"], cluster["redis"]
    server.stop()
    async with aiohttp.ClientSession() as http:
        async def ready(port):
            async with http.get(f"http://127.0.0.1:{port}/health/ready") as resp:
                return resp.status, await resp.json()

        await asyncio.sleep(0.7)  # every instance's monitor has noticed
        status, body = await ready(ports[0])
        assert status == 200 and body["status"] == "degraded"
        assert body["state"] == {"backend": "redis", "redis": "unreachable"}
        status, body, headers = await post(http, ports[0], "spend")  # budgets fail closed
        assert status == 503 and body["error"]["code"] == "budget_store_unavailable"
        assert headers["retry-after"] == "5"
        results = [await post(http, ports[1], "out") for _ in range(12)]  # 30 rpm ÷ 3
        assert [r[0] for r in results].count(200) == 10
        server.start()  # empty, on the same port
        deadline = time.monotonic() + 10
        while (await ready(ports[0]))[1]["status"] != "ready":
            assert time.monotonic() < deadline, "no reconnection"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.6)
        for port in ports:
            assert (await ready(port))[1]["state"]["redis"] == "ok"
        status, body, _ = await post(http, ports[0], "spend")  # rebuilt: still over
        assert status == 429 and body["error"]["code"] == "budget_exceeded"
        assert (await post(http, ports[2], "out"))[0] == 200


def listening_pids(port: int) -> set[str]:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return {part.split(",")[0] for part in out.split("pid=")[1:]}


def test_workers_share_one_port(cluster, tmp_path):
    port = free_port()
    parent = spawn(cluster["config"], port, "--workers", "2")
    try:
        wait_for(lambda: len(listening_pids(port)) == 2, "two workers listening")
        pids = listening_pids(port)
        assert str(parent.pid) not in pids  # the parent only supervises
        for _ in range(5):
            assert live(port)
    finally:
        parent.terminate()
        assert parent.wait(10) == 0


def test_workers_refuse_the_memory_backend(tmp_path, capsys):
    config = tmp_path / "mem.yaml"
    config.write_text("providers: {o: {type: mock}}\n"
                      "models: {echo: {targets: [{provider: o, model: echo}]}}\n")
    assert cli_main(["serve", "--config", str(config), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs shared state" in err and "backend: redis" in err

