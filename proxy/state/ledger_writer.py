"""Group commit with retries, shared by the SQLite and PostgreSQL ledgers.

One writer task per ledger takes every write queued while the previous batch
ran and commits them together: under load many requests share one commit.

Two kinds of write, because they fail differently:

- a *begin* (a request about to go upstream) is awaited by its request: when
  the database cannot write, it fails at once with `LedgerUnavailable` (the
  request is refused with a 503, nothing goes upstream unrecorded);
- a *settle* (a row finished, an attempt recorded) is never awaited by a
  request and must never be lost: when its batch fails it stays in a backlog,
  keyed by what it writes, and is retried with exponential backoff until it
  lands. Every settle statement is idempotent (an UPDATE of a pending row, an
  INSERT that ignores a present id), so a retry after a commit whose answer was
  lost counts once.

While the database refuses writes, begins fail fast (no request waits for a
lock), and the backlog is retried — an empty batch is a probe — until the
database answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("gatewise.ledger")

Batch = list[tuple[str, tuple]]
#: commits `batch` in one transaction; returns a per-statement error (or None), or
#: raises when the whole batch failed and may succeed later (locked, unreachable)
Apply = Callable[[Batch], Awaitable[list[Exception | None]]]
FIRST_RETRY_S = 0.05
MAX_RETRY_S = 5.0


def resolve(future: asyncio.Future, error: Exception | None) -> None:
    """Tell whoever waits for a write how it went (nobody, if they stopped waiting)."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class LedgerUnavailable(Exception):
    """The ledger cannot write right now; a request that needs it should be refused."""


@dataclass(slots=True)
class _Write:
    sql: str
    params: tuple
    futures: list[asyncio.Future] = field(default_factory=list)
    key: str | None = None  # a settle's identity: retried until it lands; None: a begin


class GroupWriter:
    def __init__(self, apply: Apply, name: str, grace: float = 0.0) -> None:
        self._apply = apply
        self._name = name
        self._grace = grace  # how long settles alone wait for company (SQLite: one fsync)
        self._queue: list[_Write] = []
        self._backlog: dict[str, _Write] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._deadline = 0.0
        self._delay = FIRST_RETRY_S
        self.failing: Exception | None = None  # the last failure while it lasts
        self.written_late = 0  # settles that landed only after a retry (tests, /admin)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"gatewise-{self._name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def submit(self, sql: str, params: tuple, key: str | None = None) -> asyncio.Future:
        """Queue a write; its future resolves when it is committed. Without a `key`
        it fails at once while the database refuses writes."""
        future = asyncio.get_running_loop().create_future()
        if self._task is None or (self._closing and self._task.done()):
            future.set_exception(LedgerUnavailable(f"the {self._name} is not open"))
        elif key is None and self.failing is not None:
            future.set_exception(LedgerUnavailable(_reason(self.failing)))
        else:
            self._queue.append(_Write(sql, params, [future], key))
            self._wake.set()
        return future

    async def close(self, timeout: float) -> int:
        """Write what is queued, retrying for at most `timeout` seconds; returns how
        many settles are still unwritten (they stay pending: settled on next start)."""
        if self._task is None:
            return 0
        self._closing = True
        self._deadline = time.monotonic() + timeout
        self._wake.set()
        await self._task
        left = len(self._backlog) + sum(1 for w in self._queue if w.key is not None)
        for write in [*self._backlog.values(), *self._queue]:
            for future in write.futures:
                if not future.done():
                    future.set_exception(LedgerUnavailable(f"the {self._name} closed"))
        return left

    async def _loop(self) -> None:
        while True:
            if self.failing is not None:  # back off, whatever wakes us
                wait = self._delay
                if self._closing:
                    wait = min(wait, max(0.0, self._deadline - time.monotonic()))
                await asyncio.sleep(wait)
            else:
                await self._wake.wait()
                if self._grace and not self._closing and self._queue and all(
                        w.key is not None for w in self._queue):
                    # Nobody waits on a settle: give it a moment to share the next
                    # request's begin (one commit instead of two at low concurrency).
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._grace)
                    except TimeoutError:
                        pass
            self._wake.clear()
            batch, self._queue = [*self._backlog.values(), *self._queue], []
            self._backlog = {}
            if batch or self.failing is not None:  # an empty batch probes the database
                await self._write(batch)
            if self._closing and (not self._queue and not self._backlog
                                  or time.monotonic() >= self._deadline):
                return

    async def _write(self, batch: list[_Write]) -> None:
        try:
            errors = await self._apply([(w.sql, w.params) for w in batch])
        except Exception as exc:  # noqa: BLE001 — the database said no: keep, retry
            self._failed(batch, exc)
            return
        if self.failing is not None:
            late = sum(1 for w in batch if w.key is not None)
            self.written_late += late
            log.warning(f"{self._name}: writing again; {late} delayed row write(s) landed")
        self.failing = None
        self._delay = FIRST_RETRY_S
        for write, error in zip(batch, errors):
            for future in write.futures:
                resolve(future, error)

    def _failed(self, batch: list[_Write], exc: Exception) -> None:
        for write in batch:
            if write.key is None:
                for future in write.futures:
                    if not future.done():
                        future.set_exception(LedgerUnavailable(_reason(exc)))
                continue
            kept = self._backlog.get(write.key)
            if kept is None:
                self._backlog[write.key] = write
            else:  # the same row written twice: one write, both told when it lands
                kept.futures += write.futures
        if self.failing is None:
            log.error(f"{self._name}: cannot write ({_reason(exc)}); {len(self._backlog)} row "
                      "write(s) kept and retried until they land; requests needing the "
                      "ledger get 503")
            self._delay = FIRST_RETRY_S
        else:
            self._delay = min(self._delay * 2, MAX_RETRY_S)
        self.failing = exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
