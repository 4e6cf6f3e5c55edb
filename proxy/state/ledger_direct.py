"""Ledger writes on the event loop's own thread, for `state.durability: process`.

Surviving a `kill -9` of gatewise needs the row's bytes in the operating system,
not on the disk: a commit in WAL mode with `synchronous=NORMAL` is a write() to
the WAL file and no fsync. A write somebody waits for is committed at the end
of this turn of the event loop (`call_soon`) with everything queued in it; a
settle, which nobody waits for, within `SETTLE_GRACE_S`, with every other write
of that window — a commit writes whole pages of every index it touches and
costs tens of microseconds of system calls, so concurrent requests share one —
and nobody waits for another thread. (A SQLite ledger's begins are journal
lines, proxy/state/ledger_journal.py: what comes here is mostly settles.)

The connection never waits for a lock (`busy_timeout=0`): when another
connection holds it, or the disk says no, the whole batch is handed to the
group-commit writer (`fallback`), which waits, retries and fails begins fast
exactly as it does for `durability: power`. Checkpoints (which fsync) never run
here: every `CHECKPOINT_ROWS` rows one is asked of the writer's thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from proxy.state.ledger_writer import resolve

CHECKPOINT_ROWS = 4096  # rows written between two checkpoints (run off the event loop)
SETTLE_GRACE_S = 0.002  # how long a settle alone waits for company (other writes)

#: queues a write on the group-commit writer: (sql, params, key) → its future
Fallback = Callable[[str, tuple, "str | None"], asyncio.Future]


class DirectWriter:
    def __init__(self, path: str, fallback: Fallback, checkpoint: Callable[[], None],
                 row_errors: tuple[type[Exception], ...]) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=0")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._fallback = fallback
        self._checkpoint = checkpoint
        self._row_errors = row_errors
        self._queue: list[tuple[str, tuple, str | None, asyncio.Future]] = []
        self._soon = False  # a commit is due at the end of this turn of the loop
        self._timer: asyncio.TimerHandle | None = None  # settles alone: a commit soon
        self._commits = 0
        self._rows = 0  # written since the last checkpoint

    def submit(self, sql: str, params: tuple, key: str | None = None) -> asyncio.Future:
        """Queue a write; its future resolves once the row is in the operating system
        (the writer's contract: a begin has no `key`, a settle has one). A begin is
        committed at the end of this turn of the event loop; a settle, which nobody
        waits for, at the latest `SETTLE_GRACE_S` later, with the next begin."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((sql, params, key, future))
        if key is None:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._commit)
        elif not self._soon and self._timer is None:
            self._timer = loop.call_later(SETTLE_GRACE_S, self._commit)
        return future

    def commit(self) -> None:
        """Commit what is queued now (a flush: a report must see every row)."""
        self._commit()

    def _commit(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if not batch or self._conn is None:
            self._hand_over(batch)
            return
        conn = self._conn
        errors: list[Exception | None] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # locked by another connection (or worse): the writer waits
            self._hand_over(batch)
            return
        try:
            for sql, params, _, _ in batch:
                try:
                    conn.execute(sql, params)
                    errors.append(None)
                except self._row_errors as exc:  # this row only (a duplicate id, a bad value)
                    errors.append(exc)
            conn.execute("COMMIT")
        except sqlite3.Error:  # disk full, I/O error: the writer keeps and retries
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the writer's own connection decides what landed
            self._hand_over(batch)
            return
        for (_, _, _, future), error in zip(batch, errors):
            resolve(future, error)
        self._commits += 1
        self._written(len(batch))

    def _written(self, rows: int) -> None:
        """`rows` more rows in the WAL, whoever wrote them: by rows, not commits (a commit
        may hold hundreds), a checkpoint is asked of the writer's thread now and then."""
        self._rows += rows
        if self._rows >= CHECKPOINT_ROWS and self._conn is not None:
            self._rows = 0
            self._checkpoint()

    def _hand_over(self, batch: list) -> None:
        last = None
        for sql, params, key, future in batch:
            last = self._fallback(sql, params, key)
            last.add_done_callback(_copy_to(future))
        if last is not None:  # (batches commit in order: the last one written, all are)
            last.add_done_callback(lambda _: self._written(len(batch)))

    def close(self) -> None:
        """Anything still queued goes to the writer, which writes it before it closes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hand_over(self._queue)
        self._queue = []
        self._conn.close()
        self._conn = None


def _copy_to(future: asyncio.Future) -> Callable[[asyncio.Future], None]:
    def copy(source: asyncio.Future) -> None:
        if not source.cancelled():
            resolve(future, source.exception())
        elif not future.done():
            future.cancel()
    return copy
