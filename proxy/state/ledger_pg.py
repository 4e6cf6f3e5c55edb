"""The spend ledger on PostgreSQL (asyncpg), shared by every gatewise instance.

The same rows as the SQLite ledger (proxy/state/ledger.py) and the same
`LedgerStore` interface; the schema is created or migrated on open. Writes are
group-committed by one writer task (proxy/state/ledger_writer.py): rows queued
while a transaction runs go into the next one, and a settle the server refuses
(down, unreachable, out of connections) is retried until it lands. Crash
recovery must not touch rows other instances still have in flight, so only
rows pending for longer than the longest request (`stale_after`) are settled
at their reservation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from proxy.state.ledger import CLOSE_TIMEOUT_S, GROUPS, AttemptRow, Outcome, Pending, SpendRow
from proxy.state.ledger_writer import GroupWriter

log = logging.getLogger("gatewise.ledger")
SCHEMA_VERSION = 2
#: how long a write waits for a connection or an answer before its batch counts as failed
TIMEOUT_S = 5.0
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
    finished_at DOUBLE PRECISION,
    parent TEXT
);
CREATE INDEX IF NOT EXISTS spend_created ON spend (created_at);
CREATE INDEX IF NOT EXISTS spend_pending ON spend (state) WHERE state = 'pending';
"""
# Future migrations: {version: sql}, applied in order inside the schema lock.
MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE spend ADD COLUMN IF NOT EXISTS parent TEXT",  # rows of earlier attempts
}

_INSERT = ("INSERT INTO spend (id, request_id, key_name, model, state, reserved, stream, "
           "created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7) ON CONFLICT DO NOTHING")
_FINISH = ("UPDATE spend SET state = $1, provider = $2, target = $3, http_status = $4, "
           "error_class = $5, prompt_tokens = $6, completion_tokens = $7, cached_tokens = $8, "
           "cost = $9, estimated = $10, latency_ms = $11, cache_hit = $12, finished_at = $13 "
           "WHERE id = $14 AND state = 'pending'")
_ADD = ("INSERT INTO spend (id, request_id, key_name, model, provider, target, state, "
        "http_status, error_class, prompt_tokens, completion_tokens, cached_tokens, cost, "
        "reserved, estimated, latency_ms, cache_hit, stream, created_at, finished_at, parent) "
        "VALUES (" + ", ".join(f"${i}" for i in range(1, 22)) + ") ON CONFLICT DO NOTHING")


class PostgresLedger:
    def __init__(self, dsn: str, stale_after: float = 900.0) -> None:
        self.dsn = dsn
        self.stale_after = stale_after
        self._pool: asyncpg.Pool | None = None
        self.writer = GroupWriter(self._apply, "ledger")

    @property
    def where(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self.dsn)
        if parts.password:
            host = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
        return self.dsn

    async def open(self, now: float) -> int:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4,
                                               timeout=TIMEOUT_S, command_timeout=TIMEOUT_S)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7206117)")  # one migrator
                await migrate(conn)
                status = await conn.execute(
                    "UPDATE spend SET state = 'recovered', cost = reserved, estimated = TRUE, "
                    "finished_at = $1 WHERE state = 'pending' AND created_at < $2",
                    now, now - self.stale_after)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self.writer.start()
        return int(status.split()[-1])

    async def close(self) -> None:
        left = await self.writer.close(CLOSE_TIMEOUT_S)
        if left:
            log.error(f"ledger: {left} row write(s) could not be written before shutdown "
                      f"({self.writer.failing}); their rows stay pending and are settled at "
                      "their reservation once they are older than the longest request")
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def begin(self, row: Pending) -> None:
        await self.writer.submit(_INSERT, (row.id, row.request_id, row.key_name, row.model,
                                           row.reserved, row.stream, row.created_at))

    def finish(self, row_id: str, o: Outcome) -> asyncio.Future:
        values = list(o.values())
        values[9] = bool(values[9])  # estimated, cache_hit: booleans here
        values[11] = bool(values[11])
        return self.writer.submit(_FINISH, (*values, row_id), key=f"finish:{row_id}")

    def add(self, row: AttemptRow) -> asyncio.Future:
        values = list(row.values())
        values[14] = bool(values[14])  # estimated, cache_hit, stream
        values[16] = bool(values[16])
        values[17] = bool(values[17])
        return self.writer.submit(_ADD, tuple(values), key=f"add:{row.id}")

    async def _apply(self, batch: list[tuple[str, tuple]]) -> list[Exception | None]:
        """One transaction (one commit) for the batch. A refusal of the server itself
        (down, unreachable, no connection) fails the whole batch, to be retried; a
        statement's own error is retried row by row, so one bad row cannot lose the
        others. An empty batch probes the server."""
        try:
            async with self._pool.acquire(timeout=TIMEOUT_S) as conn, conn.transaction():
                for sql, params in batch:
                    await conn.execute(sql, *params)
                if not batch:
                    await conn.execute("SELECT 1")
            return [None] * len(batch)
        except asyncpg.PostgresError as exc:
            if not _statement_error(exc):
                raise
        errors: list[Exception | None] = []
        for sql, params in batch:
            try:
                async with self._pool.acquire(timeout=TIMEOUT_S) as conn:
                    await conn.execute(sql, *params)
                errors.append(None)
            except asyncpg.PostgresError as exc:
                if not _statement_error(exc):
                    raise
                errors.append(exc)
        return errors

    async def flush(self) -> None:
        """Wait until every row queued so far is committed."""
        await self.writer.submit("SELECT 1", ())

    async def spend_by_day(self) -> list[SpendRow]:
        await self.flush()
        rows = await self._pool.fetch(
            "SELECT key_name, provider, FLOOR(created_at / 86400)::BIGINT AS day, SUM(cost) "
            "FROM spend WHERE state != 'pending' GROUP BY 1, 2, 3")
        return [SpendRow(r[0], r[1], int(r[2]), float(r[3] or 0.0)) for r in rows]

    async def report(self, by: str, since: float) -> list[dict[str, Any]]:
        await self.flush()
        return await query_report(self._pool, by, since)


async def query_report(db: Any, by: str, since: float) -> list[dict[str, Any]]:
    """Spend grouped `by` key, model or provider since `since` (a pool or connection)."""
    column = GROUPS[by]  # a fixed whitelist, never client text
    rows = await db.fetch(
        f"SELECT {column}, SUM(CASE WHEN parent IS NULL THEN 1 ELSE 0 END), "
        f"SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(cost), "
        f"SUM(CASE WHEN state = 'pending' THEN reserved ELSE 0 END), "
        f"SUM(CASE WHEN estimated THEN 1 ELSE 0 END) FROM spend "
        f"WHERE created_at >= $1 GROUP BY {column} ORDER BY SUM(cost) DESC, {column}", since)
    return [{by: r[0], "requests": int(r[1] or 0), "prompt_tokens": int(r[2] or 0),
             "completion_tokens": int(r[3] or 0), "cached_tokens": int(r[4] or 0),
             "cost_usd": round(r[5] or 0.0, 10), "pending_usd": round(r[6] or 0.0, 10),
             "estimated_rows": int(r[7] or 0)} for r in rows]


async def read_report(dsn: str, by: str, since: float) -> list[dict[str, Any]]:
    """One report over a connection of its own (`gatewise spend`)."""
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT_S)
    try:
        return await query_report(conn, by, since)
    finally:
        await conn.close()


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


def _statement_error(exc: Exception) -> bool:
    """An error of the statement itself (bad data, a constraint), not of the server:
    SQLSTATE classes 22 (data) and 23 (integrity)."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("22", "23")
