"""Stored responses on PostgreSQL (asyncpg), shared by every gatewise instance
whose ledger is there: a response stored by one instance continues on another.
The same rows and queries as the SQLite store (proxy/state/responses_store.py).
"""

from __future__ import annotations

import asyncpg
import orjson

from proxy.state.responses_store import (
    CHAIN_SQL,
    UPSERT_SQL,
    MAX_CHAIN,
    ResponseStore,
    StoredResponse,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    previous_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    response BYTEA NOT NULL,
    input BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at);
"""


def _numbered(sql: str) -> str:
    """The SQLite query's `?` placeholders as PostgreSQL's `$n`."""
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


CHAIN_PG = _numbered(CHAIN_SQL)


class PostgresResponses(ResponseStore):
    def __init__(self, dsn: str, retention: float) -> None:
        super().__init__(retention)
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the response store is not open")
        return self._pool

    async def _open(self) -> None:
        # a database that hangs fails the store call (logged; the answer still goes out)
        # rather than holding the client's reply
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4,
                                               command_timeout=10)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7206118)")  # one creator at a time
            await conn.execute(SCHEMA)

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _put(self, row: StoredResponse, now: float, expires: float) -> bool:
        status = await self.pool.execute(UPSERT_SQL, row.id, row.owner, row.previous_id, now,
                                         expires, orjson.dumps(row.response),
                                         orjson.dumps(row.input))
        return status.split()[-1] != "0"

    async def _get(self, response_id: str, owner: str, now: float) -> bytes | None:
        return await self.pool.fetchval("SELECT response FROM responses WHERE id = $1 AND "
                                        "owner = $2 AND expires_at > $3", response_id, owner,
                                        now)

    async def _input(self, response_id: str, owner: str, now: float) -> bytes | None:
        return await self.pool.fetchval("SELECT input FROM responses WHERE id = $1 AND "
                                        "owner = $2 AND expires_at > $3", response_id, owner,
                                        now)

    async def _chain(self, response_id: str, owner: str,
                     now: float) -> list[tuple[bytes, bytes]]:
        rows = await self.pool.fetch(CHAIN_PG, response_id, owner, now, owner, now, MAX_CHAIN)
        return [(r[0], r[1]) for r in rows]

    async def _delete(self, response_id: str, owner: str, now: float) -> bool:
        status = await self.pool.execute("DELETE FROM responses WHERE id = $1 AND owner = $2 "
                                         "AND expires_at > $3", response_id, owner, now)
        return status.split()[-1] != "0"

    async def _purge(self, now: float) -> int:
        status = await self.pool.execute("DELETE FROM responses WHERE expires_at <= $1", now)
        return int(status.split()[-1])
