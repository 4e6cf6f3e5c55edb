"""The spend ledger on PostgreSQL (asyncpg), shared by every gatewise instance.

The same rows as the SQLite ledger (proxy/state/ledger.py) and the same
`LedgerStore` interface; the schema is created or migrated on open. Writes are
group-committed by one writer task: rows queued while a transaction runs go
into the next one. Crash recovery must not touch rows other instances still
have in flight, so only rows pending for longer than the longest request
(`stale_after`) are settled at their reservation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from proxy.state.ledger import GROUPS, Outcome, Pending, SpendRow

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS gatewise_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spend (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    key_name TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    target TEXT,
    state TEXT NOT NULL,
    http_status INTEGER,
    error_class TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved DOUBLE PRECISION NOT NULL DEFAULT 0,
    estimated BOOLEAN NOT NULL DEFAULT FALSE,
    latency_ms DOUBLE PRECISION,
    cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS spend_created ON spend (created_at);
CREATE INDEX IF NOT EXISTS spend_pending ON spend (state) WHERE state = 'pending';
"""
# Future migrations: {version: sql}, applied in order inside the schema lock.
MIGRATIONS: dict[int, str] = {}

_INSERT = ("INSERT INTO spend (id, request_id, key_name, model, state, reserved, stream, "
           "created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7) ON CONFLICT DO NOTHING")
_FINISH = ("UPDATE spend SET state = 'done', provider = $1, target = $2, http_status = $3, "
           "error_class = $4, prompt_tokens = $5, completion_tokens = $6, cached_tokens = $7, "
           "cost = $8, estimated = $9, latency_ms = $10, cache_hit = $11, finished_at = $12 "
           "WHERE id = $13 AND state = 'pending'")


class PostgresLedger:
    def __init__(self, dsn: str, stale_after: float = 900.0) -> None:
        self.dsn = dsn
        self.stale_after = stale_after
        self._pool: asyncpg.Pool | None = None
        self._queue: list[tuple[str, tuple, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._closing = False

    async def open(self, now: float) -> int:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7206117)")  # one migrator at a time
            await migrate(conn)
            status = await conn.execute(
                "UPDATE spend SET state = 'recovered', cost = reserved, estimated = TRUE, "
                "finished_at = $1 WHERE state = 'pending' AND created_at < $2",
                now, now - self.stale_after)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="gatewise-ledger-pg")
        return int(status.split()[-1])

    async def close(self) -> None:
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            await self._writer
            self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _enqueue(self, sql: str, params: tuple) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._writer is None:
            future.set_exception(RuntimeError("the ledger is not open"))
            return future
        self._queue.append((sql, params, future))
        self._wake.set()
        return future

    async def begin(self, row: Pending) -> None:
        await self._enqueue(_INSERT, (row.id, row.request_id, row.key_name, row.model,
                                      row.reserved, row.stream, row.created_at))

    def finish(self, row_id: str, o: Outcome) -> asyncio.Future:
        return self._enqueue(_FINISH, (o.provider, o.target, o.http_status, o.error_class,
                                       o.prompt_tokens, o.completion_tokens, o.cached_tokens,
                                       o.cost, o.estimated, o.latency_ms, o.cache_hit,
                                       o.finished_at, row_id))

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if batch:
                errors = await self._apply([(s, p) for s, p, _ in batch])
                for (_, _, future), error in zip(batch, errors):
                    if not future.done():
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
            if self._closing and not self._queue:
                return

    async def _apply(self, batch: list[tuple[str, tuple]]) -> list[Exception | None]:
        """One transaction (one commit) for the batch; if it fails, row by row, so one
        bad row cannot lose the others."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for sql, params in batch:
                    await conn.execute(sql, *params)
            return [None] * len(batch)
        except Exception:  # noqa: BLE001, S110 — retried one by one below
            pass
        errors: list[Exception | None] = []
        for sql, params in batch:
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(sql, *params)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 — the waiter learns it
                errors.append(exc)
        return errors

    async def flush(self) -> None:
        """Wait until every row queued so far is committed."""
        await self._enqueue("SELECT 1", ())

    async def spend_by_day(self) -> list[SpendRow]:
        await self.flush()
        rows = await self._pool.fetch(
            "SELECT key_name, provider, FLOOR(created_at / 86400)::BIGINT AS day, SUM(cost) "
            "FROM spend WHERE state != 'pending' GROUP BY 1, 2, 3")
        return [SpendRow(r[0], r[1], int(r[2]), float(r[3] or 0.0)) for r in rows]

    async def report(self, by: str, since: float) -> list[dict[str, Any]]:
        await self.flush()
        column = GROUPS[by]  # a fixed whitelist, never client text
        rows = await self._pool.fetch(
            f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
            f"SUM(cached_tokens), SUM(cost), SUM(CASE WHEN state = 'pending' THEN reserved "
            f"ELSE 0 END), SUM(CASE WHEN estimated THEN 1 ELSE 0 END) FROM spend "
            f"WHERE created_at >= $1 GROUP BY {column} ORDER BY SUM(cost) DESC, {column}", since)
        return [{by: r[0], "requests": r[1], "prompt_tokens": int(r[2] or 0),
                 "completion_tokens": int(r[3] or 0), "cached_tokens": int(r[4] or 0),
                 "cost_usd": round(r[5] or 0.0, 10), "pending_usd": round(r[6] or 0.0, 10),
                 "estimated_rows": int(r[7] or 0)} for r in rows]


async def migrate(conn: asyncpg.Connection) -> int:
    """Create the schema or bring it to SCHEMA_VERSION; returns the version found."""
    await conn.execute(SCHEMA)
    found = await conn.fetchval("SELECT max(version) FROM gatewise_schema")
    if found is None:
        await conn.execute("INSERT INTO gatewise_schema VALUES ($1)", SCHEMA_VERSION)
        return 0
    for version in range(found + 1, SCHEMA_VERSION + 1):
        if version in MIGRATIONS:
            await conn.execute(MIGRATIONS[version])
    if found < SCHEMA_VERSION:
        await conn.execute("UPDATE gatewise_schema SET version = $1", SCHEMA_VERSION)
    return found
