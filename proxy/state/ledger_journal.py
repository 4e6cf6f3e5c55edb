"""The begun-rows journal of a SQLite ledger with `state.durability: process`.

A request's spend row must exist somewhere a crash cannot take before its
upstream call: a `kill -9` after the call must still bill its reservation.
Surviving a crash of the process (not of the machine) only needs the bytes in
the operating system, so a begin is one `write()` of one line to an append-only
file — a few microseconds, no SQLite statement, no commit, no turn of the event
loop to wait for — and the row reaches SQLite once, settled, with one INSERT.

The journal is cut into segments of `SEGMENT_ROWS` lines. A full segment is
closed, and deleted as soon as every row begun in it has a settled row
committed in SQLite. On open, rows of an earlier process's segments that have
no row in SQLite were cut by a crash: the ledger settles them at their
reservation ('recovered') and the segments are deleted. A last line torn by
the crash (half written) is skipped: its request never went upstream.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

SEGMENT_ROWS = 8192  # lines per segment file (about 1.5 MB)


@dataclass(slots=True)
class _Segment:
    path: str
    fd: int | None  # None once full (closed for writing)
    rows: int = 0
    outstanding: int = 0  # begun here, not yet settled in SQLite


class BegunJournal:
    """One process's journal: `<ledger file>-begun.<pid>.<n>` segment files."""

    def __init__(self, ledger_path: str, segment_rows: int | None = None) -> None:
        self._base = f"{ledger_path}-begun."
        self._prefix = f"{self._base}{os.getpid()}."
        self._segment_rows = segment_rows or SEGMENT_ROWS
        self._current: _Segment | None = None
        self._of: dict[str, _Segment] = {}  # row id → its segment, until settled
        self._next = 0
        self._closed = True

    def left_behind(self) -> list[tuple]:
        """Rows journaled by processes that are gone (call before `open`): `Pending`
        field values, in the order they were begun. A live process's segments (another
        gatewise on the same file) are its own business."""
        rows: list[tuple] = []
        for path in self._segments():
            try:
                with open(path, "rb") as file:
                    lines = file.readlines()
            except FileNotFoundError:  # another worker starting with us recovered it
                continue
            for line in lines:
                if not line.endswith(b"\n"):  # its write() never finished: never sent
                    continue
                try:
                    values = orjson.loads(line)
                except orjson.JSONDecodeError:  # torn by the crash: never sent
                    continue
                if isinstance(values, list) and len(values) == 7:
                    rows.append(tuple(values))
        return rows

    def clear(self) -> None:
        """Forget what an earlier process left (its rows are in SQLite now)."""
        for path in self._segments():
            _unlink(path)  # (gone already: another worker starting with us cleared it)

    def _segments(self) -> list[str]:
        """Segments left by processes no longer running, oldest first."""
        found = []
        for path in glob.glob(glob.escape(self._base) + "[0-9]*.[0-9]*"):
            pid, _, number = path[len(self._base):].partition(".")
            if pid.isdigit() and number.isdigit() and not _running(int(pid)):
                try:
                    found.append((os.path.getmtime(path), int(number), path))
                except FileNotFoundError:  # another worker starting with us cleared it
                    continue
        return [path for _, _, path in sorted(found)]

    def open(self) -> None:
        self._closed = False
        self._roll()

    def write(self, row_id: str, values: tuple) -> None:
        """Append one begun row; OSError when the file cannot take it (disk full)."""
        if self._closed:
            raise OSError("the ledger's journal is closed")
        segment = self._current
        if segment is None or segment.fd is None:
            self._roll()  # the last one failed a write: start clean
            segment = self._current
        line = orjson.dumps(values) + b"\n"
        try:
            written = os.write(segment.fd, line)
        except OSError:
            self._retire(segment)
            raise
        if written != len(line):  # out of space mid-line: what follows must not join it
            self._retire(segment)
            raise OSError("short write to the ledger's journal (is the disk full?)")
        segment.rows += 1
        segment.outstanding += 1
        self._of[row_id] = segment
        if segment.rows >= self._segment_rows:
            self._roll()

    def settled(self, row_id: str) -> None:
        """The row's settled form is committed in SQLite: its line is no longer needed."""
        segment = self._of.pop(row_id, None)
        if segment is None:
            return
        segment.outstanding -= 1
        if segment.outstanding == 0 and segment.fd is None:
            _unlink(segment.path)

    def when_landed(self, row_id: str) -> Callable[[asyncio.Future], None]:
        """A done-callback for the settle's future: `settled` once it committed."""
        def landed(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:
                self.settled(row_id)
        return landed

    def __contains__(self, row_id: str) -> bool:
        return row_id in self._of

    def close(self) -> int:
        """Stop writing; delete every segment whose rows all settled. Returns how many
        rows are still unsettled (they are recovered on the next start)."""
        self._closed = True
        if self._current is not None:
            self._retire(self._current)
        return len(self._of)

    def _retire(self, segment: _Segment) -> None:
        """No more lines go to `segment`; deleted now if nothing in it is unsettled."""
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
            if segment.outstanding == 0:
                _unlink(segment.path)

    def _roll(self) -> None:
        if self._current is not None:
            self._retire(self._current)
        while True:  # never another journal's file (a second ledger on this file here)
            path = f"{self._prefix}{self._next}"
            self._next += 1
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                continue
        self._current = _Segment(path, fd)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a reused pid: its segments are an earlier process's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Dead but not yet reaped: `kill(pid, 0)` still succeeds. A whole `--workers`
    group killed with -9 leaves its workers so until init reaps them, and their
    segments must be recovered by the workers starting again meanwhile."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:  # no /proc (not Linux), or gone this very moment
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] in (b"Z", b"X")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def recovered_rows(begun: Iterable[tuple], now: float) -> Iterable[tuple]:
    """A crashed process's unsettled rows, settled at their reservation: full rows in
    the ledger's column order (see `settled_row`)."""
    for row_id, request_id, key, model, reserved, stream, created in begun:
        yield (row_id, request_id, key, model, None, None, "recovered", None, None, 0, 0, 0,
               reserved, reserved, 1, None, 0, int(stream), created, now, None)


def settled_row(row: Any, o: Any) -> tuple:
    """A begun row (`Pending`) and its `Outcome` as one full row, in the ledger's
    column order: id, request_id, key_name, model, provider, target, state,
    http_status, error_class, prompt, completion and cached tokens, cost, reserved,
    estimated, latency_ms, cache_hit, stream, created_at, finished_at, parent."""
    return (row.id, row.request_id, row.key_name, row.model, o.provider, o.target, o.state,
            o.http_status, o.error_class, o.prompt_tokens, o.completion_tokens,
            o.cached_tokens, o.cost, row.reserved, int(o.estimated), o.latency_ms,
            int(o.cache_hit), int(row.stream), row.created_at, o.finished_at, None)


def with_in_flight(report: list[dict[str, Any]], begun: Iterable[Any], by: str,
                   since: float) -> list[dict[str, Any]]:
    """A spend report (`query_report`'s rows) with the journaled rows of requests in
    flight counted as a pending row would be: one request each, its reservation in
    `pending_usd`, no provider yet."""
    groups = {row[by]: row for row in report}
    counted = 0
    for row in begun:
        if row.created_at < since:
            continue
        counted += 1
        name = {"key": row.key_name, "model": row.model}.get(by)
        group = groups.get(name)
        if group is None:
            group = groups[name] = {by: name, "requests": 0, "prompt_tokens": 0,
                                    "completion_tokens": 0, "cached_tokens": 0,
                                    "cost_usd": 0.0, "pending_usd": 0.0, "estimated_rows": 0}
        group["requests"] += 1
        group["pending_usd"] = round(group["pending_usd"] + row.reserved, 10)
    if not counted:
        return report
    return sorted(groups.values(), key=lambda g: (-g["cost_usd"], g[by] is not None,
                                                  g[by] or ""))
