"""The spend ledger: one row per request, written before the upstream call and
finalised after it, durable on commit.

SQLite in WAL mode with `synchronous=FULL`, so every commit is fsynced. Writes
are group-committed by one writer thread: all rows queued while a commit runs
go into the next transaction, so under load many requests share one fsync and
the event loop never blocks on the disk. `LedgerStore` is the interface a
PostgreSQL ledger would implement. Rows never hold prompt text or keys.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("gatewise.ledger")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id TEXT PRIMARY KEY,            -- gateway-made, unique per exchange
    request_id TEXT NOT NULL,
    key_name TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    target TEXT,
    state TEXT NOT NULL,            -- pending | done | recovered (settled after a crash)
    http_status INTEGER,
    error_class TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,   -- USD; for a pending row, 0 until settled
    reserved REAL NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0,  -- cost is the reservation, not real usage
    latency_ms REAL,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    stream INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,       -- seconds since the epoch, UTC
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS spend_created ON spend (created_at);
CREATE INDEX IF NOT EXISTS spend_pending ON spend (state) WHERE state = 'pending';
"""

_INSERT = ("INSERT INTO spend (id, request_id, key_name, model, state, reserved, stream, "
           "created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)")
_FINISH = ("UPDATE spend SET state = 'done', provider = ?, target = ?, http_status = ?, "
           "error_class = ?, prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, "
           "cost = ?, estimated = ?, latency_ms = ?, cache_hit = ?, finished_at = ? "
           "WHERE id = ? AND state = 'pending'")
_INSERT_FULL = ("INSERT INTO spend (id, request_id, key_name, model, provider, target, state, "
                "http_status, error_class, prompt_tokens, completion_tokens, cached_tokens, "
                "cost, reserved, estimated, latency_ms, cache_hit, stream, created_at, "
                "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
FINISH_GRACE_S = 0.002  # how long a finish alone may wait for company
GROUPS = {"key": "key_name", "model": "model", "provider": "provider"}
#: an in-memory ledger writes its rows to SQLite in batches of at most this many
_MEMORY_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    request_id: str
    key_name: str | None
    model: str
    reserved: float
    stream: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    provider: str | None
    target: str | None
    http_status: int
    error_class: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float
    estimated: bool
    latency_ms: float
    cache_hit: bool
    finished_at: float


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Settled spend of one (key, provider, UTC day): what budgets are rebuilt from."""

    key_name: str | None
    provider: str | None
    day: int  # days since the epoch
    cost: float


class LedgerStore(Protocol):
    async def open(self, now: float) -> int:
        """Settle rows a crash left pending at their reservation; returns how many."""

    async def close(self) -> None: ...

    async def begin(self, row: Pending) -> None:
        """Durably record a request about to go upstream."""

    def finish(self, row_id: str, outcome: Outcome) -> asyncio.Future[None]:
        """Finalise (idempotently) a pending row; queued at once, durable when awaited."""

    async def spend_by_day(self) -> list[SpendRow]: ...

    async def report(self, by: str, since: float) -> list[dict[str, Any]]: ...


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def query_report(conn: sqlite3.Connection, by: str, since: float) -> list[dict[str, Any]]:
    column = GROUPS[by]  # a fixed whitelist, never client text
    cur = conn.execute(
        f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
        f"SUM(cached_tokens), SUM(cost), SUM(CASE WHEN state = 'pending' THEN reserved "
        f"ELSE 0 END), SUM(estimated) FROM spend WHERE created_at >= ? "
        f"GROUP BY {column} ORDER BY SUM(cost) DESC, {column}", (since,))
    return [{by: r[0], "requests": r[1], "prompt_tokens": r[2] or 0,
             "completion_tokens": r[3] or 0, "cached_tokens": r[4] or 0,
             "cost_usd": round(r[5] or 0.0, 10), "pending_usd": round(r[6] or 0.0, 10),
             "estimated_rows": r[7] or 0} for r in cur.fetchall()]


def period_start(period: str, now: float) -> float:
    """Start of the UTC day or month containing `now` (0 for `total`)."""
    if period == "total":
        return 0.0
    t = time.gmtime(now)
    if period == "day":
        return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)))
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


class SqliteLedger:
    """`path` may be ":memory:" for a ledger that lives as long as the process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatewise-ledger")
        self._queue: list[tuple[str, tuple, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._closing = False
        # In-memory only: rows begun since the last sync, as full `_INSERT_FULL`
        # parameter lists (finished in place), and finishes of rows already synced.
        self._fresh: dict[str, list] = {}
        self._finishes: list[tuple] = []

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _inline(self) -> bool:
        """An in-memory ledger has no disk to wait for: its statements run inline,
        without the writer thread's round trip."""
        return self.path == ":memory:"

    async def open(self, now: float) -> int:
        self._conn = connect(self.path) if self._inline else await self._run(connect, self.path)
        settled = await self._run(self._recover, now)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="gatewise-ledger")
        return settled

    def _recover(self, now: float) -> int:
        cur = self._conn.execute(  # autocommit: one durable transaction
            "UPDATE spend SET state = 'recovered', cost = reserved, estimated = 1, "
            "finished_at = ? WHERE state = 'pending'", (now,))
        return cur.rowcount

    async def close(self) -> None:
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            await self._writer
            self._writer = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    def _enqueue(self, sql: str, params: tuple) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._writer is None:
            future.set_exception(RuntimeError("the ledger is not open"))
            return future
        if self._inline:
            error = self._apply([(sql, params)])[0]
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
            return future
        self._queue.append((sql, params, future))
        self._wake.set()
        return future

    async def begin(self, row: Pending) -> None:
        if self._inline and self._writer is not None:
            # No disk to wait for: the row is kept here and reaches the SQLite
            # connection in a batch, before anything reads it (see `_sync`).
            if row.id in self._fresh:
                raise sqlite3.IntegrityError("UNIQUE constraint failed: spend.id")
            self._fresh[row.id] = [row.id, row.request_id, row.key_name, row.model, None, None,
                                   "pending", None, None, 0, 0, 0, 0.0, row.reserved, 0, None,
                                   0, int(row.stream), row.created_at, None]
            if len(self._fresh) >= _MEMORY_BATCH:
                self._sync()
            return
        await self._enqueue(_INSERT, (row.id, row.request_id, row.key_name, row.model,
                                      row.reserved, int(row.stream), row.created_at))

    def finish(self, row_id: str, o: Outcome) -> asyncio.Future:
        if self._inline and self._writer is not None:
            future = asyncio.get_running_loop().create_future()
            fresh = self._fresh.get(row_id)
            if fresh is None:  # synced already (or unknown: the UPDATE matches nothing)
                self._finishes.append((o.provider, o.target, o.http_status, o.error_class,
                                       o.prompt_tokens, o.completion_tokens, o.cached_tokens,
                                       o.cost, int(o.estimated), o.latency_ms,
                                       int(o.cache_hit), o.finished_at, row_id))
            elif fresh[6] == "pending":  # what `_FINISH`'s WHERE state = 'pending' does
                fresh[4:13] = (o.provider, o.target, "done", o.http_status, o.error_class,
                               o.prompt_tokens, o.completion_tokens, o.cached_tokens, o.cost)
                fresh[14:17] = (int(o.estimated), o.latency_ms, int(o.cache_hit))
                fresh[19] = o.finished_at
            future.set_result(None)
            return future
        return self._enqueue(_FINISH, (o.provider, o.target, o.http_status, o.error_class,
                                       o.prompt_tokens, o.completion_tokens, o.cached_tokens,
                                       o.cost, int(o.estimated), o.latency_ms, int(o.cache_hit),
                                       o.finished_at, row_id))

    def _sync(self) -> None:
        """In-memory ledger: write the buffered rows and finishes in one transaction."""
        fresh, self._fresh = self._fresh, {}
        finishes, self._finishes = self._finishes, []
        if not (fresh or finishes) or self._conn is None:
            return
        conn = self._conn
        conn.execute("BEGIN")
        try:
            try:
                conn.executemany(_INSERT_FULL, list(fresh.values()))
            except sqlite3.Error:  # one bad row must not lose the others
                for params in fresh.values():
                    try:
                        conn.execute(_INSERT_FULL, params)
                    except sqlite3.Error as exc:
                        log.error(f"ledger: a spend row could not be recorded: {exc}")
            conn.executemany(_FINISH, finishes)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing and self._queue and all(
                    sql is _FINISH for sql, _, _ in self._queue):
                # Nobody waits on a finish: give it a moment to share the next
                # request's begin (one fsync instead of two at low concurrency). A
                # crash in between leaves the row pending: settled at its reservation.
                try:  # ends at once when anything else is queued
                    await asyncio.wait_for(self._wake.wait(), FINISH_GRACE_S)
                except TimeoutError:
                    pass
                self._wake.clear()
            batch, self._queue = self._queue, []
            if batch:
                try:
                    errors = await self._run(self._apply, [(s, p) for s, p, _ in batch])
                except Exception as exc:  # noqa: BLE001 — the disk failed: every waiter learns it
                    errors = [exc] * len(batch)
                for (_, _, future), error in zip(batch, errors):
                    if not future.done():
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
            if self._closing and not self._queue:
                return

    def _apply(self, batch: Iterable[tuple[str, tuple]]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for sql, params in batch:
                try:
                    conn.execute(sql, params)
                    errors.append(None)
                except sqlite3.Error as exc:  # one bad row must not lose the others
                    errors.append(exc)
            conn.execute("COMMIT")  # one fsync for the whole batch
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return errors

    async def spend_by_day(self) -> list[SpendRow]:
        if self._inline:
            self._sync()
        def query() -> list[SpendRow]:
            cur = self._conn.execute(
                "SELECT key_name, provider, CAST(created_at / 86400 AS INTEGER), SUM(cost) "
                "FROM spend WHERE state != 'pending' GROUP BY 1, 2, 3")
            return [SpendRow(r[0], r[1], r[2], r[3] or 0.0) for r in cur.fetchall()]
        return await self._run(query)

    async def flush(self) -> None:
        """Wait until every row queued so far is committed (batches commit in order)."""
        if self._inline:
            self._sync()
        await self._enqueue("SELECT 1", ())

    async def report(self, by: str, since: float) -> list[dict[str, Any]]:
        await self.flush()
        return await self._run(query_report, self._conn, by, since)
