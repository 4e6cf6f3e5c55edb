"""The spend ledger: durability, idempotence, crash recovery (kill -9), restarts, streams."""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from proxy.server.gateway import GATEWAY
from proxy.state.ledger import Outcome, Pending, SqliteLedger
from tests.fakes.server import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-gw-ledger-0123456789abcdef"
ADMIN = "sk-gw-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
REAL_COST = 0.012  # 9 prompt + 3 completion tokens at $0.001 a token
RESERVE_5 = 0.014  # 9 estimated prompt + 5 max output


def outcome(**changes) -> Outcome:
    values = {"provider": "p", "target": "p/m", "http_status": 200, "error_class": None,
              "prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 0, "cost": 0.5,
              "estimated": False, "latency_ms": 1.0, "cache_hit": False, "finished_at": 2.0}
    values.update(changes)
    return Outcome(**values)


@pytest.mark.parametrize(("durability", "synchronous"), [("power", 2), ("process", 1)])
async def test_pending_then_finished_once_and_recovered(tmp_path, durability, synchronous):
    db = str(tmp_path / "l.db")
    ledger = SqliteLedger(db, durability=durability)
    assert await ledger.open(1.0) == 0
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous  # FULL/NORMAL
    # process: rows are written on the event loop's thread, never through the writer
    assert (ledger._direct is not None) == (durability == "process")
    for i in range(3):
        await ledger.begin(Pending(f"id{i}", f"r{i}", "k", "m", 0.75, False, 1.0))
    # power: a pending row, fsynced; process: a line in the journal, no row until settled
    pending = conn.execute("SELECT COUNT(*) FROM spend WHERE state='pending'").fetchone()[0]
    assert pending == (3 if durability == "power" else 0)
    assert journaled(db) == (0 if durability == "power" else 3)
    await ledger.finish("id0", outcome())
    await ledger.finish("id0", outcome(cost=99.0))  # a second finish changes nothing
    await ledger.close()
    ledger = SqliteLedger(db)
    assert await ledger.open(5.0) == 2  # id1, id2 were left pending: a crash
    rows = conn.execute("SELECT id, state, cost, estimated FROM spend ORDER BY id").fetchall()
    assert rows == [("id0", "done", 0.5, 0), ("id1", "recovered", 0.75, 1),
                    ("id2", "recovered", 0.75, 1)]
    report = await ledger.report("key", 0.0)
    assert report[0]["cost_usd"] == 2.0 and report[0]["requests"] == 3
    await ledger.close()


def journaled(db: str | Path) -> int:
    """Lines in the begun-rows journal of a `durability: process` ledger."""
    return sum(len(Path(p).read_bytes().splitlines()) for p in glob.glob(f"{db}-begun.*"))


async def test_group_commit_keeps_every_row(tmp_path):
    ledger = SqliteLedger(str(tmp_path / "l.db"))
    await ledger.open(1.0)
    await asyncio.gather(*(ledger.begin(Pending(f"id{i}", "r", None, "m", 0.0, False, 1.0))
                           for i in range(200)))
    futures = [ledger.finish(f"id{i}", outcome(cost=0.01)) for i in range(200)]
    await asyncio.gather(*futures)
    report = await ledger.report("model", 0.0)
    assert report[0]["requests"] == 200 and report[0]["cost_usd"] == pytest.approx(2.0)
    await ledger.close()


def _config(db: Path, latency_ms: int = 0, chunk_delay_ms: int = 0,
            durability: str = "process") -> str:
    return textwrap.dedent(f"""
        admin: {{key: {ADMIN}}}
        providers:
          offline: {{type: mock, latency_ms: {latency_ms}, chunk_delay_ms: {chunk_delay_ms}}}
        models:
          echo: {{targets: [{{provider: offline, model: echo, price: {{input: 1000, output: 1000}}}}]}}
        keys:
          - {{name: app, key: {KEY}, budget: {{usd: 5, per: month}}}}
        state: {{ledger: "sqlite:{db}", durability: {durability}}}
        telemetry: {{log_format: text, log_level: warning}}
    """)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m proxy serve` in a subprocess, to be killed for real."""

    def __init__(self, config: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config),
             "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)

    async def ready(self) -> Server:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(self.url + "/health/live") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientConnectionError:
                    pass
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read().decode())
                await asyncio.sleep(0.05)
        raise AssertionError("gatewise did not start")

    def stop(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)
        self.proc.stderr.close()


async def _admin(url: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url + path, headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
        return await resp.json()


async def _key_spent(url: str) -> float:
    return (await _admin(url, "/admin/keys"))["data"][0]["budget"]["spent_usd"]


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_kill_9_mid_request_then_restart_forgets_nothing(tmp_path, durability):
    db = tmp_path / "ledger.db"
    slow = tmp_path / "slow.yaml"
    slow.write_text(_config(db, latency_ms=30_000, durability=durability))
    fast = tmp_path / "fast.yaml"
    fast.write_text(_config(db, durability=durability))

    server = await Server(slow).ready()
    try:
        async with aiohttp.ClientSession() as http:
            request = asyncio.ensure_future(http.post(server.url + "/v1/chat/completions",
                                                      json=CHAT, headers=AUTH))
            for _ in range(200):  # until the pending row (or journal line) is written
                await asyncio.sleep(0.02)
                if journaled(db):
                    break
                if db.exists():
                    with sqlite3.connect(db) as conn:
                        if conn.execute("SELECT COUNT(*) FROM spend WHERE state = 'pending'"
                                        ).fetchone()[0]:
                            break
            else:
                raise AssertionError("no pending row was written before the upstream call")
            os.kill(server.proc.pid, signal.SIGKILL)
            with pytest.raises(aiohttp.ClientError):
                await request
    finally:
        server.stop(signal.SIGKILL)

    server = await Server(fast).ready()
    try:
        assert await _key_spent(server.url) == pytest.approx(RESERVE_5)  # rebuilt at start
        spend = await _admin(server.url, "/admin/spend?by=key&period=month")
        assert spend["data"][0]["estimated_rows"] == 1
        assert spend["total_cost_usd"] == pytest.approx(RESERVE_5)
        async with aiohttp.ClientSession() as http, http.post(
                server.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["x-gatewise-cost"] == f"{REAL_COST:.8f}"
        assert await _key_spent(server.url) == pytest.approx(RESERVE_5 + REAL_COST)
    finally:
        server.stop(signal.SIGINT)  # a clean stop

    with sqlite3.connect(db) as conn:
        states = conn.execute("SELECT state, cost FROM spend ORDER BY created_at").fetchall()
    assert [s for s, _ in states] == ["recovered", "done"]

    server = await Server(fast).ready()  # a clean restart forgets nothing either
    try:
        assert await _key_spent(server.url) == pytest.approx(RESERVE_5 + REAL_COST)
    finally:
        server.stop(signal.SIGINT)


async def test_kill_9_right_after_a_request_keeps_its_settled_row(tmp_path):
    """`durability: process`: a finished row written without fsync is in the operating
    system the moment another connection can read it, and a kill -9 cannot take it back."""
    db = tmp_path / "ledger.db"
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(_config(db))
    server = await Server(cfg).ready()
    try:
        async with aiohttp.ClientSession() as http, http.post(
                server.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
            assert resp.status == 200
        for _ in range(200):
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT COUNT(*) FROM spend WHERE state = 'done'").fetchone()[0]:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the finished row never reached the ledger file")
        os.kill(server.proc.pid, signal.SIGKILL)
    finally:
        server.stop(signal.SIGKILL)
    server = await Server(cfg).ready()
    try:
        assert await _key_spent(server.url) == pytest.approx(REAL_COST)
    finally:
        server.stop(signal.SIGINT)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT state, cost, estimated FROM spend").fetchall()
    assert rows == [("done", pytest.approx(REAL_COST), 0)]


@pytest.fixture
async def gateway(tmp_path):
    servers = []

    async def start(**mock) -> LoopbackServer:
        config = parse_config(_config(tmp_path / "l.db", **mock), {})
        server = LoopbackServer(build_app(config), handler_cancellation=True)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.close()


def _rows(gw: LoopbackServer) -> list[tuple]:
    conn = sqlite3.connect(gw.app[GATEWAY].config.state.ledger)
    return conn.execute("SELECT state, http_status, prompt_tokens, completion_tokens, cost, "
                        "estimated, stream FROM spend").fetchall()


async def test_stream_is_billed_from_its_final_usage(gateway):
    gw = await gateway()
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/chat/completions", headers=AUTH, json={**CHAT, "stream": True}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert text.endswith("data: [DONE]\n\n") and '"usage"' not in text  # client didn't ask
    await gw.app[GATEWAY].budget.ledger.flush()
    assert _rows(gw) == [("done", 200, 9, 3, pytest.approx(REAL_COST), 0, 1)]


async def test_client_disconnect_mid_stream_is_still_billed(gateway):
    gw = await gateway(chunk_delay_ms=200)
    words = " ".join(f"word{i}" for i in range(20))
    chat = {**CHAT, "messages": [{"role": "user", "content": words}], "max_tokens": 100,
            "stream": True}
    async with aiohttp.ClientSession() as http, http.post(
            gw.url + "/v1/chat/completions", headers=AUTH, json=chat) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if b'"content":"word' in line:
                break  # one word in, the client walks away
        resp.close()
    budget = gw.app[GATEWAY].budget
    for _ in range(100):
        await budget.ledger.flush()
        rows = _rows(gw)
        if rows and rows[0][0] == "done":
            break
        await asyncio.sleep(0.02)
    (state, status, _, completion, cost, estimated, _), = rows
    assert state == "done" and status == 499
    # Billed from what was streamed (the translator counts chunks), flagged as an
    # estimate, and far below the 100-token reservation.
    assert estimated == 1 and 1 <= completion <= 3
    assert 0 < cost < 0.100  # the 100 reserved output tokens alone cost $0.100
    spent, held = budget.store.used(next(iter(budget.store._spent)))
    assert held == 0 and spent == pytest.approx(cost)


async def test_an_error_answer_is_recorded_with_its_status(tmp_path):
    config = parse_config(textwrap.dedent(f"""
        providers: {{down: {{type: openai, base_url: "http://127.0.0.1:9", api_key: "${{UNSET}}"}}}}
        models: {{m: {{targets: [{{provider: down, model: gpt-4o}}]}}}}
        keys: [{{name: app, key: {KEY}}}]
        state: {{ledger: "sqlite:{tmp_path / 'l.db'}"}}
    """), {})
    async with LoopbackServer(build_app(config)) as gw, aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", headers=AUTH,
                             json={**CHAT, "model": "m"}) as resp:
            assert resp.status == 503
        await gw.app[GATEWAY].budget.ledger.flush()
        row = sqlite3.connect(tmp_path / "l.db").execute(
            "SELECT state, http_status, error_class, cost FROM spend").fetchall()
    assert row == [("done", 503, "provider_unavailable", 0.0)]  # not a 499 "cancel"


async def test_process_durability_checkpoints_off_the_event_loop(tmp_path, monkeypatch):
    """Direct writes never checkpoint themselves; every CHECKPOINT_ROWS rows the
    writer's thread moves the WAL's pages into the database file."""
    import proxy.state.ledger_direct as ledger_direct
    monkeypatch.setattr(ledger_direct, "CHECKPOINT_ROWS", 2)
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db), durability="process")
    await ledger.open(1.0)
    for i in range(4):
        await ledger.begin(Pending(f"id{i}", f"r{i}", "k", "m", 0.5, False, 1.0))
        await ledger.finish(f"id{i}", outcome())
    await ledger.flush()
    copy = tmp_path / "copy.db"
    for _ in range(250):  # checkpoints run on the writer's thread, soon after the rows land
        copy.write_bytes(db.read_bytes())  # the database file alone, without its WAL
        with sqlite3.connect(copy) as conn:
            if conn.execute("SELECT COUNT(*) FROM spend").fetchone()[0] == 4:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the rows never reached the database file")
    await ledger.close()


async def test_process_durability_commits_a_turn_of_the_loop_together(tmp_path):
    """A begin is a journal line, no SQLite write; fifty settles queued together share
    one commit, each resolving once its row can be read by another connection (it is
    in the operating system), and a settled row's journal segment is then deleted."""
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db), durability="process")
    await ledger.open(1.0)
    before = ledger._direct._commits
    await asyncio.gather(*(ledger.begin(Pending(f"id{i}", f"r{i}", "k", "m", 0.5, False, 1.0))
                           for i in range(50)))
    assert ledger._direct._commits == before and journaled(db) == 50
    with pytest.raises(sqlite3.IntegrityError):  # a duplicate id fails alone, as before
        await ledger.begin(Pending("id0", "r0", "k", "m", 0.5, False, 1.0))
    await asyncio.gather(*(ledger.finish(f"id{i}", outcome()) for i in range(50)))
    assert ledger._direct._commits - before == 1
    with sqlite3.connect(db) as conn:
        done = conn.execute("SELECT COUNT(*) FROM spend WHERE state = 'done'").fetchone()
    assert done[0] == 50
    await ledger.close()
    assert journaled(db) == 0 and not glob.glob(f"{db}-begun.*")  # all settled: no file left


async def test_process_durability_hands_a_failing_commit_to_the_writer(tmp_path):
    """The loop's own connection failing (here: closed under it) loses nothing: the
    batch goes to the group-commit writer, which writes it."""
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db), durability="process")
    await ledger.open(1.0)
    broken = sqlite3.connect(str(db))
    broken.close()
    ledger._direct._conn = broken
    await ledger.begin(Pending("id0", "r0", "k", "m", 0.5, False, 1.0))
    await ledger.finish("id0", outcome())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, state, cost FROM spend").fetchall()
    assert rows == [("id0", "done", 0.5)]
    ledger._direct = None  # its connection is gone already
    await ledger.close()
