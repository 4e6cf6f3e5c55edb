"""The spend ledger: one row per request, begun before the upstream call and
settled after it; one more row per earlier attempt of the request that consumed
tokens (failed over, cut by a timeout), so every token an upstream bills is
recorded once.

SQLite in WAL mode. `durability="power"`: `synchronous=FULL`, every commit is
fsynced, and writes are group-committed by one writer thread
(proxy/state/ledger_writer.py): all rows queued while a commit runs go into the
next transaction, so under load many requests share one fsync and the event
loop never blocks on the disk. `durability="process"` (the default) survives a
crash of gatewise, not of the machine: a begin is one line appended to a
journal file (proxy/state/ledger_journal.py), not a row, and the row reaches
SQLite once, settled, with `synchronous=NORMAL` and no fsync, committed on the
event loop's thread in groups (proxy/state/ledger_direct.py); writes that find
the database locked or failing go through the writer. A settle the database
refuses (locked past its busy timeout, disk full) is kept and retried until it
lands. `LedgerStore` is the interface both ledgers implement. Rows never hold
prompt text or keys.
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

from proxy.state.ledger_direct import DirectWriter
from proxy.state.ledger_journal import BegunJournal, recovered_rows, settled_row, with_in_flight
from proxy.state.ledger_schema import BUSY_TIMEOUT_MS, SCHEMA, checkpoint, connect
from proxy.state.ledger_writer import GroupWriter, LedgerUnavailable

__all__ = ["BUSY_TIMEOUT_MS", "SCHEMA", "AttemptRow", "LedgerStore", "LedgerUnavailable",
           "Outcome", "Pending", "SpendRow", "connect", "SqliteLedger"]

log = logging.getLogger("gatewise.ledger")

_INSERT = ("INSERT INTO spend (id, request_id, key_name, model, state, reserved, stream, "
           "created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)")
_FINISH = ("UPDATE spend SET state = ?, provider = ?, target = ?, http_status = ?, "
           "error_class = ?, prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, "
           "cost = ?, estimated = ?, latency_ms = ?, cache_hit = ?, finished_at = ? "
           "WHERE id = ? AND state = 'pending'")
_COLUMNS = ("id, request_id, key_name, model, provider, target, state, http_status, "
            "error_class, prompt_tokens, completion_tokens, cached_tokens, cost, reserved, "
            "estimated, latency_ms, cache_hit, stream, created_at, finished_at, parent")
_INSERT_FULL = f"INSERT INTO spend ({_COLUMNS}) VALUES ({', '.join('?' * 21)})"
_ADD = f"INSERT OR IGNORE INTO spend ({_COLUMNS}) VALUES ({', '.join('?' * 21)})"
FINISH_GRACE_S = 0.002  # how long a finish alone may wait for company
CLOSE_TIMEOUT_S = 10.0  # how long a clean shutdown keeps retrying unwritten rows
GROUPS = {"key": "key_name", "model": "model", "provider": "provider"}
#: a statement's own fault, not the database's: that row fails alone (any other
#: error, e.g. locked or disk full, fails the batch, which is retried)
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
               sqlite3.DataError, OverflowError, ValueError, TypeError)
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
    http_status: int | None
    error_class: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float
    estimated: bool
    latency_ms: float
    cache_hit: bool
    finished_at: float
    state: str = "done"  # or "interrupted": ended by a clean shutdown

    def values(self) -> tuple:
        """In `_FINISH`'s order, without the row id."""
        return (self.state, self.provider, self.target, self.http_status, self.error_class,
                self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.cost,
                int(self.estimated), self.latency_ms, int(self.cache_hit), self.finished_at)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """An earlier attempt of a request that consumed tokens: its own settled row."""

    id: str  # "<request row id>.<attempt number>"
    parent: str
    request_id: str
    key_name: str | None
    model: str
    stream: bool
    created_at: float
    outcome: Outcome

    def values(self) -> tuple:
        """In `_COLUMNS` order."""
        o = self.outcome
        return (self.id, self.request_id, self.key_name, self.model, o.provider, o.target,
                o.state, o.http_status, o.error_class, o.prompt_tokens, o.completion_tokens,
                o.cached_tokens, o.cost, 0.0, int(o.estimated), o.latency_ms, int(o.cache_hit),
                int(self.stream), self.created_at, o.finished_at, self.parent)


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

    async def close(self) -> None:
        """Write what is queued (retrying for a while), then close."""

    async def begin(self, row: Pending) -> None:
        """Durably record a request about to go upstream; LedgerUnavailable when the
        database cannot write now."""

    def finish(self, row_id: str, outcome: Outcome) -> asyncio.Future[None]:
        """Finalise (idempotently) a pending row; queued at once, retried until it
        lands, durable when the future resolves."""

    def add(self, row: AttemptRow) -> asyncio.Future[None]:
        """Record an earlier attempt's settled row (idempotently, by its id)."""

    async def spend_by_day(self) -> list[SpendRow]: ...

    async def report(self, by: str, since: float) -> list[dict[str, Any]]: ...


def query_report(conn: sqlite3.Connection, by: str, since: float) -> list[dict[str, Any]]:
    column = GROUPS[by]  # a fixed whitelist, never client text
    cur = conn.execute(
        f"SELECT {column}, SUM(CASE WHEN parent IS NULL THEN 1 ELSE 0 END), "
        f"SUM(prompt_tokens), SUM(completion_tokens), "
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

    def __init__(self, path: str, durability: str = "process") -> None:
        self.path = path
        self.durability = durability  # process | power (see the module's docstring)
        self._direct: DirectWriter | None = None
        self._journal: BegunJournal | None = None
        self._begun: dict[str, Pending] = {}  # journaled, not yet settled
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatewise-ledger")
        self.writer = GroupWriter(self._write, "ledger", grace=FINISH_GRACE_S)
        self._open = False
        # In-memory only: rows begun since the last sync, as full `_INSERT_FULL`
        # parameter lists (finished in place), and writes of rows already synced.
        self._fresh: dict[str, list] = {}
        self._later: list[tuple[str, tuple]] = []

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def where(self) -> str:
        return "in memory" if self._inline else f"sqlite:{self.path}"

    @property
    def _inline(self) -> bool:
        """An in-memory ledger has no disk to wait for (and no other process to lock
        it): its statements run inline, without the writer thread's round trip."""
        return self.path == ":memory:"

    async def open(self, now: float) -> int:
        sync = "FULL" if self.durability == "power" else "NORMAL"
        self._conn = connect(self.path) if self._inline else \
            await self._run(connect, self.path, False, sync)
        settled = await self._run(self._recover, now)
        if not self._inline and self.durability == "process":
            journal = BegunJournal(self.path)
            settled += await self._run(self._recover_journal, journal, now)
            journal.open()
            self._journal = journal
            self._direct = DirectWriter(self.path, self.writer.submit, self._checkpoint,
                                        _ROW_ERRORS)
        self.writer.start()
        self._open = True
        return settled

    def _recover(self, now: float) -> int:
        cur = self._conn.execute(  # autocommit: one durable transaction
            "UPDATE spend SET state = 'recovered', cost = reserved, estimated = 1, "
            "finished_at = ? WHERE state = 'pending'", (now,))
        return cur.rowcount

    def _recover_journal(self, journal: BegunJournal, now: float) -> int:
        """A crashed process's journaled, unsettled rows: at their reservation."""
        before = self._conn.total_changes
        self._apply((_ADD, values) for values in recovered_rows(journal.left_behind(), now))
        journal.clear()
        return self._conn.total_changes - before

    async def close(self) -> None:
        if self._open:
            self._open = False
            if self._inline:
                self._sync()
            if self._direct is not None:  # what it still queues goes to the writer
                self._direct.close()
                self._direct = None
            left = await self.writer.close(CLOSE_TIMEOUT_S)
            if self._journal is not None:  # its unsettled rows are recovered next time
                self._journal.close()
            if left:
                log.error(f"ledger: {left} row write(s) could not be written before shutdown "
                          f"({self.writer.failing}); their rows stay pending and are settled "
                          "at their reservation on the next start")
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def begin(self, row: Pending) -> None:
        if self._inline and self._open:
            # No disk to wait for: the row is kept here and reaches the SQLite
            # connection in a batch, before anything reads it (see `_sync`).
            if row.id in self._fresh:
                raise sqlite3.IntegrityError("UNIQUE constraint failed: spend.id")
            self._fresh[row.id] = [row.id, row.request_id, row.key_name, row.model, None, None,
                                   "pending", None, None, 0, 0, 0, 0.0, row.reserved, 0, None,
                                   0, int(row.stream), row.created_at, None, None]
            if len(self._fresh) >= _MEMORY_BATCH:
                self._sync()
            return
        params = (row.id, row.request_id, row.key_name, row.model, row.reserved,
                  int(row.stream), row.created_at)
        if self._journal is not None:
            if self.writer.failing is not None:  # settles are not landing: no new spend
                raise LedgerUnavailable(str(self.writer.failing))
            if row.id in self._begun:  # (as the table's primary key would say)
                raise sqlite3.IntegrityError("UNIQUE constraint failed: spend.id")
            try:
                self._journal.write(row.id, params)
            except OSError as exc:
                raise LedgerUnavailable(f"the journal cannot be written: {exc}") from None
            self._begun[row.id] = row
            return
        await (self._direct or self.writer).submit(_INSERT, params)

    def finish(self, row_id: str, o: Outcome) -> asyncio.Future:
        if self._inline and self._open:
            fresh = self._fresh.get(row_id)
            if fresh is None:  # synced already (or unknown: the UPDATE matches nothing)
                self._later.append((_FINISH, (*o.values(), row_id)))
            elif fresh[6] == "pending":  # what `_FINISH`'s WHERE state = 'pending' does
                (fresh[6], fresh[4], fresh[5], fresh[7], fresh[8], fresh[9], fresh[10],
                 fresh[11], fresh[12], fresh[14], fresh[15], fresh[16], fresh[19]) = o.values()
            return _done()
        row = self._begun.pop(row_id, None)
        if row is not None:  # journaled: its one INSERT, settled
            future = self._direct.submit(_ADD, settled_row(row, o), f"finish:{row_id}")
            future.add_done_callback(self._journal.when_landed(row_id))
            return future
        return (self._direct or self.writer).submit(_FINISH, (*o.values(), row_id),
                                                    f"finish:{row_id}")

    def add(self, row: AttemptRow) -> asyncio.Future:
        if self._inline and self._open:
            self._later.append((_ADD, row.values()))
            return _done()
        return (self._direct or self.writer).submit(_ADD, row.values(), f"add:{row.id}")

    def _checkpoint(self) -> None:
        """Direct writes never checkpoint (a checkpoint fsyncs): the writer's thread does."""
        if self._conn is not None:
            asyncio.get_running_loop().run_in_executor(
                self._executor, checkpoint, self._conn).add_done_callback(_checkpointed)

    def _sync(self) -> None:
        """In-memory ledger: write the buffered rows and updates in one transaction."""
        fresh, self._fresh = self._fresh, {}
        later, self._later = self._later, []
        if not (fresh or later) or self._conn is None:
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
            for sql, params in later:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _write(self, batch: list[tuple[str, tuple]]) -> list[Exception | None]:
        return await self._run(self._apply, batch)

    def _apply(self, batch: Iterable[tuple[str, tuple]]) -> list[Exception | None]:
        """One transaction, one fsync. Taking the write lock first (IMMEDIATE) means a
        locked database fails the batch as a whole, after one busy timeout, rather
        than statement by statement; an empty batch only probes the lock."""
        errors: list[Exception | None] = []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in batch:
                try:
                    conn.execute(sql, params)
                    errors.append(None)
                except _ROW_ERRORS as exc:  # this row only (a duplicate id, a bad value)
                    errors.append(exc)
            conn.execute("COMMIT")
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
            return
        if self._direct is not None:  # its queue now; what it hands over, before the probe
            self._direct.commit()
        await self.writer.submit("SELECT 1", ())

    async def report(self, by: str, since: float) -> list[dict[str, Any]]:
        await self.flush()  # (requests in flight are journaled, not in the table yet)
        found = await self._run(query_report, self._conn, by, since)
        return with_in_flight(found, self._begun.values(), by, since)


def _checkpointed(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:  # the next one retries
        log.warning(f"ledger: a checkpoint did not run: {future.exception()}")


def _done() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
