"""The PostgreSQL ledger against a real server on loopback, in its own database
(created and dropped here). Missing PostgreSQL: skipped locally, failed in CI."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from proxy.state.ledger import LedgerUnavailable, Outcome, Pending
from proxy.state.ledger_pg import SCHEMA_VERSION, PostgresLedger, migrate
from tests.test_redis_stores import require

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
async def pg_dsn():
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"gatewise_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def outcome(cost: float = 0.5, provider: str = "openai") -> Outcome:
    return Outcome(provider=provider, target=f"{provider}/gpt-4o", http_status=200,
                   error_class=None, prompt_tokens=10, completion_tokens=5, cached_tokens=2,
                   cost=cost, estimated=False, latency_ms=12.5, cache_hit=False,
                   finished_at=2000.0)


async def test_rows_are_durable_finish_is_idempotent_and_reports_sum(pg_dsn):
    ledger = PostgresLedger(pg_dsn, stale_after=100.0)
    assert await ledger.open(1000.0) == 0
    await asyncio.gather(*(ledger.begin(Pending(f"id{i}", f"r{i}", "web", "gpt-4o", 0.75,
                                                i % 2 == 0, 1000.0 + i)) for i in range(4)))
    await ledger.finish("id0", outcome(0.5))
    await ledger.finish("id0", outcome(99.0))  # a second finish changes nothing
    await ledger.finish("id1", outcome(0.25, provider="anthropic"))
    report = await ledger.report("key", 0.0)
    assert report == [{"key": "web", "requests": 4, "prompt_tokens": 20, "completion_tokens": 10,
                       "cached_tokens": 4, "cost_usd": 0.75, "pending_usd": 1.5,
                       "estimated_rows": 0}]
    by_provider = {r["provider"]: r["cost_usd"] for r in await ledger.report("provider", 0.0)}
    assert by_provider == {"openai": 0.5, "anthropic": 0.25, None: 0.0}
    days = await ledger.spend_by_day()
    assert sorted((r.key_name, r.provider, r.day, r.cost) for r in days) == [
        ("web", "anthropic", 0, 0.25), ("web", "openai", 0, 0.5)]
    await ledger.close()
    conn = await asyncpg.connect(pg_dsn)
    row = await conn.fetchrow("SELECT * FROM spend WHERE id = 'id0'")
    await conn.close()
    assert (row["state"], row["cost"], row["http_status"], row["stream"], row["latency_ms"]) == \
        ("done", 0.5, 200, True, 12.5)


async def test_recovery_settles_only_rows_no_instance_can_still_finish(pg_dsn):
    a = PostgresLedger(pg_dsn, stale_after=100.0)
    await a.open(1000.0)
    await a.begin(Pending("old", "r1", "web", "m", 0.75, False, 1000.0))  # its owner crashed
    await a.begin(Pending("live", "r2", "web", "m", 0.5, False, 1150.0))  # another instance's
    b = PostgresLedger(pg_dsn, stale_after=100.0)
    assert await b.open(1200.0) == 1  # only the row older than the longest request
    await a.finish("live", outcome(0.1))
    await a.finish("old", outcome(9.0))  # too late: it was settled at its reservation
    rows = {r["key"]: r for r in await b.report("key", 0.0)}
    assert rows["web"]["cost_usd"] == pytest.approx(0.85)
    assert rows["web"]["estimated_rows"] == 1 and rows["web"]["pending_usd"] == 0
    await a.close()
    await b.close()


async def test_schema_is_created_once_and_versioned(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    assert await migrate(conn) == 0  # created
    assert await migrate(conn) == SCHEMA_VERSION  # found, nothing to do
    assert await conn.fetchval("SELECT count(*) FROM gatewise_schema") == 1
    await conn.close()
    ledger = PostgresLedger(pg_dsn)
    assert await ledger.open(5.0) == 0
    await ledger.close()
    failed = ledger.finish("x", outcome())
    with pytest.raises(LedgerUnavailable):
        await failed
