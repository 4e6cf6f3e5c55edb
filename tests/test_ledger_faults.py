"""The ledger under faults: a database held locked (SQLite) or refusing writes
(PostgreSQL) while requests finish, a clean shutdown mid-request, a ledger URL
that cannot be opened. Nothing is billed twice or never, and every refusal is a
clear 503, never a 500."""

from __future__ import annotations

import asyncio
import glob
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

import proxy.state.ledger as sqlite_ledger
import proxy.state.ledger_schema as ledger_schema
import proxy.state.ledger_pg as pg_ledger
from proxy.server.app import build_app
from proxy.server.configure import parse_config
from proxy.server.gateway import GATEWAY
from tests.fakes.server import LoopbackServer
from tests.test_pg_ledger import pg_dsn  # noqa: F401 — the fixture

ROOT = Path(__file__).parents[1]
KEY = "sk-gw-faults-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN = "sk-gw-admin-faults-0123456789"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
REAL_COST = 0.012  # "hi there" on the mock: 9 prompt + 3 completion tokens at $0.001
SCOPE = "key:app"


def config(ledger: str, latency_ms: int = 300) -> str:
    # a price of $1000 per million tokens either way: a token costs $0.001
    return textwrap.dedent(f"""
        providers: {{offline: {{type: mock, latency_ms: {latency_ms}}}}}
        models: {{echo: {{targets: [{{provider: offline, model: echo,
                  price: {{input: 1000, output: 1000}}}}]}}}}
        keys: [{{name: app, key: {KEY}, budget: {{usd: 100}}}}]
        state: {{ledger: "{ledger}"}}
        admin: {{key: {ADMIN}}}
    """)


async def serve(text: str, **runner) -> LoopbackServer:
    return await LoopbackServer(build_app(parse_config(text, {})), handler_cancellation=True,
                                **runner).start()


async def post(gw, body=CHAT) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/v1/chat/completions", json=body, headers=AUTH) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def ledger_report_status(gw) -> int:
    async with aiohttp.ClientSession() as http, http.get(
            f"{gw.url}/admin/spend", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        return resp.status


def spent(gw) -> float:
    store = gw.app[GATEWAY].budget.store
    return sum(v for k, v in store._spent.items() if k.startswith(SCOPE))


def journaled(db: str) -> int:
    """Rows begun in the journal of a `durability: process` ledger."""
    return sum(len(Path(p).read_bytes().splitlines()) for p in glob.glob(f"{db}-begun.*"))


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


@pytest.fixture
def short_busy(monkeypatch):
    monkeypatch.setattr(ledger_schema, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(sqlite_ledger, "CLOSE_TIMEOUT_S", 0.5)


async def test_locked_sqlite_finish_is_retried_until_it_lands_once(tmp_path, short_busy):
    db = str(tmp_path / "l.db")
    gw = await serve(config(f"sqlite:{db}"))
    ledger = gw.app[GATEWAY].budget.ledger
    big = {**CHAT, "max_tokens": 1000}  # reserves $1.009; really costs $0.012
    first = asyncio.create_task(post(gw, big))
    await until(lambda: journaled(db))  # begun (a journal line): it is upstream now
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    status, _, _ = await first
    assert status == 200
    await until(lambda: ledger.writer.failing is not None)
    # while the ledger cannot write: a clear 503 with retry-after, at once, never a 500
    started = time.monotonic()
    status, headers, body = await post(gw)
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert b"ledger_unavailable" in body
    assert time.monotonic() - started < 1.0  # no waiting for the lock per request
    assert locker.execute("SELECT state FROM spend").fetchall() == []  # still journaled
    # a spend report now would be short: it says so instead of guessing
    assert (await ledger_report_status(gw)) == 503
    locker.execute("COMMIT")
    await until(lambda: ledger.writer.failing is None and not ledger.writer.backlog)
    rows = sqlite3.connect(db).execute("SELECT state, cost, reserved FROM spend").fetchall()
    assert rows == [("done", pytest.approx(REAL_COST), pytest.approx(1.009))]
    # the first request's settled row, and the refused request's settle-at-nothing
    # (it never began, so it matches no row)
    assert ledger.writer.written_late == 2
    status, _, _ = await post(gw)
    assert status == 200
    assert spent(gw) == pytest.approx(2 * REAL_COST)
    await gw.close()
    # a restart rebuilds the budget from real costs: nothing was left to recover
    again = await serve(config(f"sqlite:{db}"))
    assert spent(again) == pytest.approx(2 * REAL_COST)
    states = sqlite3.connect(db).execute("SELECT state FROM spend").fetchall()
    assert states == [("done",), ("done",)]
    await again.close()


async def test_a_locked_database_delays_settles_then_refuses_begins(tmp_path, short_busy):
    """A begin needs only the journal, so requests are served while another process
    holds the database; their settled rows wait and are retried. Once the writer
    knows the database refuses writes, new requests get a 503 and reserve nothing."""
    db = str(tmp_path / "l.db")
    gw = await serve(config(f"sqlite:{db}", latency_ms=0))
    budget = gw.app[GATEWAY].budget
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    results = await asyncio.gather(*(post(gw) for _ in range(5)))
    assert [r[0] for r in results] == [200] * 5
    await until(lambda: budget.ledger.writer.failing is not None)
    status, headers, body = await post(gw)
    assert status == 503 and b"ledger_unavailable" in body
    assert all(held == 0 for held in budget.store._held.values())
    locker.execute("COMMIT")
    await until(lambda: budget.ledger.writer.failing is None
                and not budget.ledger.writer.backlog, 10)
    assert (await post(gw))[0] == 200
    await gw.close()
    rows = sqlite3.connect(db).execute("SELECT state, http_status FROM spend").fetchall()
    assert rows == [("done", 200)] * 6  # each served request once; the refused one: none
    assert not glob.glob(f"{db}-begun.*")  # every journal line settled


async def test_clean_shutdown_marks_requests_in_flight_interrupted(tmp_path, caplog):
    db = str(tmp_path / "l.db")
    gw = await serve(config(f"sqlite:{db}", latency_ms=5000), shutdown_timeout=0.2)
    request = asyncio.create_task(post(gw))
    await until(lambda: journaled(db))
    await gw.close()
    with pytest.raises(aiohttp.ClientError):
        await request
    rows = sqlite3.connect(db).execute(
        "SELECT state, http_status, error_class, estimated FROM spend").fetchall()
    assert rows == [("interrupted", None, "shutdown", 1)]
    with caplog.at_level("WARNING", logger="gatewise.budget"):
        again = await serve(config(f"sqlite:{db}"))
        await again.close()
    assert "left pending" not in caplog.text  # a clean shutdown is not reported as a crash


async def test_shutdown_while_locked_retries_then_leaves_rows_for_recovery(tmp_path,
                                                                           short_busy):
    db = str(tmp_path / "l.db")
    gw = await serve(config(f"sqlite:{db}", latency_ms=0))
    assert (await post(gw))[0] == 200
    await gw.app[GATEWAY].budget.ledger.flush()
    locker = sqlite3.connect(db, isolation_level=None)
    begun = asyncio.create_task(post(gw))
    await asyncio.sleep(0)
    locker.execute("BEGIN IMMEDIATE")
    await begun
    started = time.monotonic()
    await gw.close()  # retries for CLOSE_TIMEOUT_S, then gives up (logged)
    assert time.monotonic() - started < 3
    locker.execute("COMMIT")


# --- PostgreSQL -------------------------------------------------------------------------

async def test_postgres_ledger_with_the_memory_backend(pg_dsn):
    gw = await serve(config(pg_dsn, latency_ms=0))
    assert (await post(gw))[0] == 200
    await gw.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT state, http_status, cost FROM spend")
    finally:
        await conn.close()
    assert [(r["state"], r["http_status"]) for r in rows] == [("done", 200)]
    assert rows[0]["cost"] == pytest.approx(REAL_COST)


async def test_postgres_refusing_writes_retries_settles_and_503s_new_requests(
        pg_dsn, monkeypatch):
    monkeypatch.setattr(pg_ledger, "TIMEOUT_S", 0.3)
    gw = await serve(config(pg_dsn, latency_ms=400))
    ledger = gw.app[GATEWAY].budget.ledger
    first = asyncio.create_task(post(gw, {**CHAT, "max_tokens": 1000}))
    locker = await asyncpg.connect(pg_dsn)
    await until(lambda: ledger.writer.failing is None and first.done() is False)
    await asyncio.sleep(0.1)  # the first request's row is in
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE spend IN ACCESS EXCLUSIVE MODE")
    assert (await first)[0] == 200
    await until(lambda: ledger.writer.failing is not None)
    status, headers, body = await post(gw)
    assert status == 503 and b"ledger_unavailable" in body and "retry-after" in headers
    await tx.rollback()
    await until(lambda: ledger.writer.failing is None and not ledger.writer.backlog)
    rows = await locker.fetch("SELECT state, cost FROM spend")
    assert [(r["state"], round(r["cost"], 6)) for r in rows] == [("done", REAL_COST)]
    await locker.close()
    await gw.close()


def test_an_unreachable_ledger_stops_start_up_in_one_line(tmp_path):
    path = tmp_path / "gw.yaml"
    url = f"postgresql://postgres:pw-{uuid.uuid4().hex[:8]}@127.0.0.1:9/nowhere"
    path.write_text(config(url))
    done = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(path),
                           "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("gatewise: cannot open the spend ledger postgresql://postgres:"
                                "***@127.0.0.1:9/nowhere: ")
    assert "Traceback" not in done.stderr and "pw-" not in done.stderr
    path.write_text(config(f"sqlite:{tmp_path}/no/such/dir/ledger.db"))
    done = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(path),
                           "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot open the spend ledger sqlite:" in done.stderr
