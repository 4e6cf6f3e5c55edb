"""Client keys made through the admin API, in the ledger's SQLite file.

One connection on one thread of its own, so the event loop never waits on the
disk; changes are single IMMEDIATE transactions that write the key, the change
sequence and the audit row together. The CLI (`gatewise keys`) uses the same
store on the same file while the server runs (WAL: readers never block).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import orjson

from proxy.state.api_keys import AuditEntry, KeyConflict, KeyNotFound, KeyRecord, KeyStoreDown

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,    -- SHA-256 hex of the secret; the secret is never stored
    prefix TEXT NOT NULL,           -- the first characters, to tell keys apart
    previous_digest TEXT,           -- the secret before the last rotation...
    previous_until REAL,            -- ...valid until then
    spec TEXT NOT NULL,             -- models, limits, budget, expires_at, metadata (JSON)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys_seq (one INTEGER PRIMARY KEY CHECK (one = 1),
                                         seq INTEGER NOT NULL);
INSERT OR IGNORE INTO api_keys_seq (one, seq) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS api_keys_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    key_name TEXT,
    admin TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_audit_key ON api_keys_audit (key_name, id);
"""
COLUMNS = ("name", "digest", "prefix", "previous_digest", "previous_until", "spec",
           "created_at", "updated_at", "revoked_at", "last_used_at", "seq")
#: the columns an update may set (a fixed list: never client text in SQL)
SETTABLE = frozenset({"digest", "prefix", "previous_digest", "previous_until", "spec",
                      "revoked_at"})


def row_values(record: KeyRecord) -> list[Any]:
    """The record's values in COLUMNS order, its spec as JSON text (both backends)."""
    values = [getattr(record, c) for c in COLUMNS]
    values[COLUMNS.index("spec")] = orjson.dumps(record.spec).decode()
    return values


def change_values(changes: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The changed column names (sorted, each settable) and their values."""
    names = sorted(changes)
    if not set(names) <= SETTABLE:
        raise ValueError(f"not settable: {set(names) - SETTABLE}")
    return names, [orjson.dumps(changes[n]).decode() if n == "spec" else changes[n]
                   for n in names]


def name_taken(name: str) -> KeyConflict:
    return KeyConflict(f"A key named '{name}' already exists (names are never "
                       "reused, also after a revoke).")


def row_record(row: tuple) -> KeyRecord:
    values = dict(zip(COLUMNS, row))
    values["spec"] = orjson.loads(values["spec"])
    return KeyRecord(**values)


def audit_json(rows: list[tuple]) -> list[dict[str, Any]]:
    return [{"id": r[0], "at": r[1], "action": r[2], "key": r[3], "admin": r[4],
             "source": r[5], "detail": orjson.loads(r[6])} for r in rows]


class SqliteKeyStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatewise-keys")

    async def _run(self, fn: Callable, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise KeyStoreDown(f"the key database failed: {exc}") from None

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        await self._run(self._connect)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=False)

    async def seq(self) -> int:
        return await self._run(lambda: self._conn.execute(
            "SELECT seq FROM api_keys_seq").fetchone()[0])

    async def all(self) -> list[KeyRecord]:
        rows = await self._run(lambda: self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM api_keys ORDER BY created_at, name").fetchall())
        return [row_record(r) for r in rows]

    async def get(self, name: str) -> KeyRecord | None:
        row = await self._run(lambda: self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM api_keys WHERE name = ?", (name,)).fetchone())
        return row_record(row) if row else None

    def _change(self, write: Callable[[sqlite3.Connection, int], None],
                audit: AuditEntry) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq = conn.execute("UPDATE api_keys_seq SET seq = seq + 1 RETURNING seq").fetchone()[0]
            write(conn, seq)
            _audit(conn, audit)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def create(self, record: KeyRecord, audit: AuditEntry) -> KeyRecord:
        def write(conn: sqlite3.Connection, seq: int) -> None:
            record.seq = seq
            conn.execute(f"INSERT INTO api_keys ({', '.join(COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(COLUMNS))})", row_values(record))
        try:
            await self._run(self._change, write, audit)
        except sqlite3.IntegrityError:
            raise name_taken(record.name) from None
        return record

    async def update(self, name: str, changes: dict[str, Any], audit: AuditEntry,
                     live_only: bool = True) -> KeyRecord:
        names, values = change_values(changes)

        def write(conn: sqlite3.Connection, seq: int) -> None:
            sets = ", ".join([f"{n} = ?" for n in names] + ["updated_at = ?", "seq = ?"])
            where = "name = ?" + (" AND revoked_at IS NULL" if live_only else "")
            cur = conn.execute(f"UPDATE api_keys SET {sets} WHERE {where}",
                               [*values, audit.at, seq, name])
            if cur.rowcount != 1:
                raise KeyNotFound(name)
        await self._run(self._change, write, audit)
        record = await self.get(name)
        assert record is not None
        return record

    async def touch(self, used: dict[str, float]) -> None:
        rows = [(when, name, when) for name, when in used.items()]

        def write() -> None:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE name = ? AND "
                                 "(last_used_at IS NULL OR last_used_at < ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        await self._run(write)

    async def audit(self, entry: AuditEntry) -> None:
        await self._run(_audit, self._conn, entry)

    async def audit_rows(self, limit: int, before: int | None,
                         key_name: str | None) -> list[dict[str, Any]]:
        where, args = [], []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if key_name is not None:
            where.append("key_name = ?")
            args.append(key_name)
        sql = ("SELECT id, at, action, key_name, admin, source, detail FROM api_keys_audit"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        rows = await self._run(lambda: self._conn.execute(sql, [*args, limit]).fetchall())
        return audit_json(rows)


def _audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    conn.execute("INSERT INTO api_keys_audit (at, action, key_name, admin, source, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (entry.at, entry.action, entry.key_name,
                                               entry.admin, entry.source,
                                               orjson.dumps(entry.detail).decode()))
