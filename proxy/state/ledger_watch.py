"""A ledger that says when it cannot write, so the operator is told (an alert)
and not only the log.

It wraps any ledger (SQLite, PostgreSQL) and passes everything through; only
`begin` (awaited before a request goes upstream) and `finish` (queued after)
are watched. What is reported is the exception, never the row.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

OnError = Callable[[BaseException], None]


class WatchedLedger:
    def __init__(self, inner: Any, on_error: OnError) -> None:
        self.inner = inner
        self._on_error = on_error

    async def begin(self, row: Any) -> None:
        try:
            await self.inner.begin(row)
        except Exception as exc:
            self._on_error(exc)
            raise

    def finish(self, row_id: str, outcome: Any) -> asyncio.Future:
        future = self.inner.finish(row_id, outcome)
        if not future.done():
            future.add_done_callback(self._finished)
        else:
            self._finished(future)
        return future

    def _finished(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._on_error(future.exception())

    def __getattr__(self, name: str) -> Any:  # open, close, report, flush, path, ...
        return getattr(self.inner, name)
