"""Client keys made through the admin API, in the ledger's PostgreSQL database,
shared by every gatewise instance (the same rows and interface as the SQLite
store, proxy/state/api_keys_sqlite.py).

A change locks the one sequence row, so changes from any instance are ordered
and every instance polling the sequence sees each of them.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from proxy.state.api_keys import AuditEntry, KeyNotFound, KeyRecord, KeyStoreDown
from proxy.state.api_keys_sqlite import COLUMNS, change_values, name_taken, row_values

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    previous_digest TEXT,
    previous_until DOUBLE PRECISION,
    spec TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION,
    seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys_seq (one INTEGER PRIMARY KEY CHECK (one = 1),
                                         seq BIGINT NOT NULL);
INSERT INTO api_keys_seq (one, seq) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS api_keys_audit (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    key_name TEXT,
    admin TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_audit_key ON api_keys_audit (key_name, id);
"""
_DOWN = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError)


def _record(row: Any) -> KeyRecord:
    values = {c: row[c] for c in COLUMNS}
    values["spec"] = orjson.loads(values["spec"])
    return KeyRecord(**values)


class PostgresKeyStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7206118)")  # one at a time
                await conn.execute(SCHEMA)
        except _DOWN as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return await self._pool.fetch(sql, *args)
        except _DOWN as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    async def seq(self) -> int:
        return int((await self._fetch("SELECT seq FROM api_keys_seq"))[0][0])

    async def all(self) -> list[KeyRecord]:
        rows = await self._fetch(f"SELECT {', '.join(COLUMNS)} FROM api_keys "
                                 "ORDER BY created_at, name")
        return [_record(r) for r in rows]

    async def get(self, name: str) -> KeyRecord | None:
        rows = await self._fetch(f"SELECT {', '.join(COLUMNS)} FROM api_keys WHERE name = $1",
                                 name)
        return _record(rows[0]) if rows else None

    async def _change(self, write: Any, audit: AuditEntry) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                seq = await conn.fetchval("UPDATE api_keys_seq SET seq = seq + 1 RETURNING seq")
                await write(conn, int(seq))
                await _audit(conn, audit)
        except asyncpg.UniqueViolationError:
            raise
        except _DOWN as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    async def create(self, record: KeyRecord, audit: AuditEntry) -> KeyRecord:
        async def write(conn: asyncpg.Connection, seq: int) -> None:
            record.seq = seq
            await conn.execute(f"INSERT INTO api_keys ({', '.join(COLUMNS)}) VALUES ("
                               + ", ".join(f"${i + 1}" for i in range(len(COLUMNS))) + ")",
                               *row_values(record))
        try:
            await self._change(write, audit)
        except asyncpg.UniqueViolationError:
            raise name_taken(record.name) from None
        return record

    async def update(self, name: str, changes: dict[str, Any], audit: AuditEntry,
                     live_only: bool = True) -> KeyRecord:
        names, values = change_values(changes)

        async def write(conn: asyncpg.Connection, seq: int) -> None:
            sets = ", ".join([f"{n} = ${i + 1}" for i, n in enumerate(names)]
                             + [f"updated_at = ${len(names) + 1}", f"seq = ${len(names) + 2}"])
            where = f"name = ${len(names) + 3}" + (" AND revoked_at IS NULL" if live_only
                                                    else "")
            status = await conn.execute(f"UPDATE api_keys SET {sets} WHERE {where}",
                                        *values, audit.at, seq, name)
            if status.split()[-1] != "1":
                raise KeyNotFound(name)
        await self._change(write, audit)
        record = await self.get(name)
        assert record is not None
        return record

    async def touch(self, used: dict[str, float]) -> None:
        try:
            await self._pool.executemany(
                "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1) "
                "WHERE name = $2", [(when, name) for name, when in used.items()])
        except _DOWN as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    async def audit(self, entry: AuditEntry) -> None:
        try:
            async with self._pool.acquire() as conn:
                await _audit(conn, entry)
        except _DOWN as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    async def audit_rows(self, limit: int, before: int | None,
                         key_name: str | None) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT id, at, action, key_name, admin, source, detail FROM api_keys_audit "
            "WHERE ($1::BIGINT IS NULL OR id < $1) AND ($2::TEXT IS NULL OR key_name = $2) "
            "ORDER BY id DESC LIMIT $3", before, key_name, limit)
        return [{"id": r[0], "at": r[1], "action": r[2], "key": r[3], "admin": r[4],
                 "source": r[5], "detail": orjson.loads(r[6])} for r in rows]


async def _audit(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    await conn.execute("INSERT INTO api_keys_audit (at, action, key_name, admin, source, detail) "
                       "VALUES ($1, $2, $3, $4, $5, $6)", entry.at, entry.action, entry.key_name,
                       entry.admin, entry.source, orjson.dumps(entry.detail).decode())
