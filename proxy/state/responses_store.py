"""Stored responses of the Responses API: SQLite by default, PostgreSQL when
the ledger is there (proxy/state/responses_pg.py), both behind `ResponseStore`.

A row holds one Response object and the input items of its request, owned by
the client key that made it: every read names the owner, so a key never sees
(or continues) another key's responses, and an unknown id and someone else's
look the same. `previous_response_id` replays a chain of rows, oldest first,
read in one recursive query. Rows expire after the configured retention.

A write still in flight is awaited by a read of the same id in this process,
so a client that continues a conversation as soon as it has read
`response.completed` finds its response.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

log = logging.getLogger("gatewise.responses")

#: the longest chain `previous_response_id` replays
MAX_CHAIN = 10_000
PURGE_EVERY_S = 600.0
#: an in-memory store (no ledger file) keeps at most this many responses, oldest dropped
#: first, so `store: true` traffic cannot grow the process without bound
MEMORY_MAX_ROWS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,             -- the client key's name; '' when no keys are configured
    previous_id TEXT,
    created_at REAL NOT NULL,        -- seconds since the epoch
    expires_at REAL NOT NULL,
    response BLOB NOT NULL,          -- the Response object, JSON
    input BLOB NOT NULL              -- its request's input items, JSON
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at);
"""
CHAIN_SQL = """
WITH RECURSIVE chain(id, previous_id, response, input, depth) AS (
    SELECT id, previous_id, response, input, 0 FROM responses
     WHERE id = ? AND owner = ? AND expires_at > ?
    UNION ALL
    SELECT r.id, r.previous_id, r.response, r.input, c.depth + 1
      FROM responses r JOIN chain c ON r.id = c.previous_id
     WHERE r.owner = ? AND r.expires_at > ? AND c.depth < ?
) SELECT response, input FROM chain ORDER BY depth DESC
"""


#: an id already stored keeps its first response: an upstream that reuses its ids must
#: neither let one key take over another's response nor turn a stored chain into a loop
#: (a reused id continued from its own successor) that every later turn would replay.
#: Only a row past its retention (gone for everyone, not yet purged) is replaced.
UPSERT_SQL = ("INSERT INTO responses (id, owner, previous_id, created_at, expires_at, response, "
              "input) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET "
              "owner = excluded.owner, previous_id = excluded.previous_id, "
              "created_at = excluded.created_at, expires_at = excluded.expires_at, "
              "response = excluded.response, input = excluded.input "
              "WHERE responses.expires_at <= excluded.created_at")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner: str
    previous_id: str | None
    response: dict[str, Any]
    input: list[dict[str, Any]]


def chain_items(rows: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """(response, input) rows, oldest first → the conversation's items in order."""
    items: list[dict[str, Any]] = []
    for response, given in rows:
        items += orjson.loads(given)
        output = orjson.loads(response).get("output")
        items += output if isinstance(output, list) else []
    return items


class ResponseStore:
    """The shared logic: pending writes, retention, purging. Backends implement `_…`."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._pending: dict[str, asyncio.Future] = {}
        self._purged = 0.0

    async def open(self) -> None:
        await self._open()
        await self._purge_now()

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)
        await self._close()

    async def put(self, row: StoredResponse) -> None:
        now = time.time()
        future = asyncio.get_running_loop().create_future()
        self._pending[row.id] = future
        try:
            stored = await self._put(row, now, now + self.retention)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else need await it
            raise
        finally:
            self._pending.pop(row.id, None)
        if not stored:
            log.warning("the upstream reused a response id that is already stored; the "
                        "first response keeps it", extra={"response_id": row.id})
        if now - self._purged > PURGE_EVERY_S:
            await self._purge_now()

    async def _settled(self, response_id: str) -> None:
        pending = self._pending.get(response_id)
        if pending is not None:
            await asyncio.wait([pending])

    async def get(self, response_id: str, owner: str) -> dict[str, Any] | None:
        await self._settled(response_id)
        raw = await self._get(response_id, owner, time.time())
        return orjson.loads(raw) if raw is not None else None

    async def input_items(self, response_id: str, owner: str) -> list[dict[str, Any]] | None:
        await self._settled(response_id)
        raw = await self._input(response_id, owner, time.time())
        return orjson.loads(raw) if raw is not None else None

    async def chain(self, response_id: str, owner: str) -> list[dict[str, Any]] | None:
        """The items of the conversation up to and including `response_id`; None when
        it is unknown, expired or another key's. A deleted or expired link ends it."""
        await self._settled(response_id)
        rows = await self._chain(response_id, owner, time.time())
        return chain_items(rows) if rows else None

    async def delete(self, response_id: str, owner: str) -> bool:
        await self._settled(response_id)
        return await self._delete(response_id, owner, time.time())

    async def _purge_now(self) -> None:
        self._purged = time.time()
        try:
            gone = await self._purge(self._purged)
            if gone:
                log.info(f"removed {gone} stored responses past their retention")
        except Exception:  # noqa: BLE001 — a purge failing must not fail a request
            log.exception("purging expired stored responses failed")

    # --- what a backend implements -------------------------------------------------------

    async def _open(self) -> None: ...
    async def _close(self) -> None: ...
    async def _put(self, row: StoredResponse, now: float, expires: float) -> bool:
        """Whether the row was written (False: its id is taken)."""
    async def _get(self, response_id: str, owner: str, now: float) -> bytes | None: ...
    async def _input(self, response_id: str, owner: str, now: float) -> bytes | None: ...
    async def _chain(self, response_id: str, owner: str,
                     now: float) -> list[tuple[bytes, bytes]]: ...
    async def _delete(self, response_id: str, owner: str, now: float) -> bool: ...
    async def _purge(self, now: float) -> int: ...


class SqliteResponses(ResponseStore):
    """`path` is the ledger's SQLite file, or ":memory:" (kept while the process runs).
    Statements run on one thread of their own, so the event loop never waits on disk."""

    def __init__(self, path: str, retention: float) -> None:
        super().__init__(retention)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatewise-responses")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def _open(self) -> None:
        await self._run(self._connect)

    async def _close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=False)

    def _execute(self, sql: str, params: tuple) -> sqlite3.Cursor:
        if self._conn is None:
            raise RuntimeError("the response store is not open")
        return self._conn.execute(sql, params)

    async def _put(self, row: StoredResponse, now: float, expires: float) -> bool:
        def put() -> bool:
            stored = self._execute(UPSERT_SQL.replace("$", "?"), (
                row.id, row.owner, row.previous_id, now, expires, orjson.dumps(row.response),
                orjson.dumps(row.input))).rowcount > 0
            if stored and self.path == ":memory:":
                self._execute("DELETE FROM responses WHERE id IN (SELECT id FROM responses "
                              "ORDER BY created_at DESC LIMIT -1 OFFSET ?)", (MEMORY_MAX_ROWS,))
            return stored
        return await self._run(put)

    async def _one(self, column: str, response_id: str, owner: str, now: float) -> bytes | None:
        def read() -> bytes | None:
            found = self._execute(f"SELECT {column} FROM responses WHERE id = ? AND owner = ? "
                                  "AND expires_at > ?", (response_id, owner, now)).fetchone()
            return bytes(found[0]) if found else None
        return await self._run(read)

    async def _get(self, response_id: str, owner: str, now: float) -> bytes | None:
        return await self._one("response", response_id, owner, now)

    async def _input(self, response_id: str, owner: str, now: float) -> bytes | None:
        return await self._one("input", response_id, owner, now)

    async def _chain(self, response_id: str, owner: str,
                     now: float) -> list[tuple[bytes, bytes]]:
        def read() -> list[tuple[bytes, bytes]]:
            cur = self._execute(CHAIN_SQL, (response_id, owner, now, owner, now, MAX_CHAIN))
            return [(bytes(r), bytes(i)) for r, i in cur.fetchall()]
        return await self._run(read)

    async def _delete(self, response_id: str, owner: str, now: float) -> bool:
        def delete() -> bool:
            return self._execute("DELETE FROM responses WHERE id = ? AND owner = ? AND "
                                 "expires_at > ?", (response_id, owner, now)).rowcount > 0
        return await self._run(delete)

    async def _purge(self, now: float) -> int:
        def purge() -> int:
            return self._execute("DELETE FROM responses WHERE expires_at <= ?",
                                 (now,)).rowcount
        return await self._run(purge)
