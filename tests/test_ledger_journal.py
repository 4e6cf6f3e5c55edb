"""The begun-rows journal of `durability: process` (proxy/state/ledger_journal.py):
segments roll and are deleted once settled, a torn line is skipped, a live process's
segments are not recovered, and a journal that cannot be written refuses the begin."""

from __future__ import annotations

import asyncio
import errno
import glob
import os
import sqlite3
import subprocess
import sys

import pytest

import proxy.state.ledger_journal as ledger_journal
from proxy.state.ledger import Pending, SqliteLedger
from proxy.state.ledger_writer import LedgerUnavailable
from tests.test_ledger import outcome


def segments(db) -> list[str]:
    return sorted(glob.glob(f"{db}-begun.*"))


def rows(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, state, cost, reserved FROM spend ORDER BY id").fetchall()


async def test_full_segments_are_deleted_once_every_row_settled(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_journal, "SEGMENT_ROWS", 4)
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    for i in range(10):
        await ledger.begin(Pending(f"id{i}", "r", "k", "m", 0.5, False, 1.0))
    assert len(segments(db)) == 3  # 4 + 4 + 2 lines
    for i in range(4):
        await ledger.finish(f"id{i}", outcome())
    assert len(segments(db)) == 2  # the first is settled and gone
    await ledger.finish("id5", outcome())
    assert len(segments(db)) == 2  # the second still has three rows out
    await ledger.close()  # id4, id6..id9 stay journaled: a restart recovers them
    again = SqliteLedger(str(db))
    assert await again.open(3.0) == 5
    got = rows(db)
    assert [r[1] for r in got] == ["done"] * 4 + ["recovered", "done"] + ["recovered"] * 4
    assert got[4] == ("id4", "recovered", 0.5, 0.5)
    await again.close()
    assert segments(db) == []


async def test_a_torn_last_line_is_skipped(tmp_path):
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    await ledger.begin(Pending("id0", "r", None, "m", 0.25, True, 1.0))
    with open(segments(db)[0], "ab") as file:
        file.write(b'["id1","r",null,"m",0.2')  # a kill -9 in the middle of a write
    ledger._journal = None  # a crash: nothing is closed or settled
    again = SqliteLedger(str(db))
    assert await again.open(2.0) == 1
    assert rows(db) == [("id0", "recovered", 0.25, 0.25)]
    await again.close()


async def test_a_running_process_keeps_its_segments(tmp_path):
    db = tmp_path / "l.db"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(f"{db}-begun.{other.pid}.0", "wb") as file:
            file.write(b'["id9","r",null,"m",0.5,0,1.0]\n')
        ledger = SqliteLedger(str(db))
        assert await ledger.open(1.0) == 0  # its process still runs: not a crash
        assert os.path.exists(f"{db}-begun.{other.pid}.0")
        await ledger.close()
    finally:
        other.kill()
        other.wait()
    ledger = SqliteLedger(str(db))
    assert await ledger.open(2.0) == 1  # now it is gone: its row is recovered
    assert rows(db) == [("id9", "recovered", 0.5, 0.5)]
    await ledger.close()


async def test_a_journal_that_cannot_be_written_refuses_the_begin(tmp_path, monkeypatch):
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ledger_journal.os, "write", full)
    with pytest.raises(LedgerUnavailable, match="No space left"):
        await ledger.begin(Pending("id0", "r", None, "m", 0.5, False, 1.0))
    monkeypatch.undo()
    ledger.finish("id0", outcome())  # the budget settles a refused begin at nothing
    await ledger.flush()
    assert rows(db) == []  # it never began: nothing to bill
    await ledger.close()


async def test_a_report_counts_requests_in_flight_as_pending(tmp_path):
    ledger = SqliteLedger(str(tmp_path / "l.db"))
    await ledger.open(1.0)
    await ledger.begin(Pending("id0", "r", "app", "m", 0.5, False, 10.0))
    await ledger.begin(Pending("id1", "r", "app", "m", 0.25, False, 10.0))
    await ledger.begin(Pending("id2", "r", "other", "m", 0.5, False, 1.0))  # before `since`
    await ledger.finish("id0", outcome(cost=0.125))
    report = await ledger.report("key", 5.0)
    assert report == [{"key": "app", "requests": 2, "prompt_tokens": 10,
                       "completion_tokens": 5, "cached_tokens": 0, "cost_usd": 0.125,
                       "pending_usd": 0.25, "estimated_rows": 0}]
    await ledger.close()


async def test_a_short_write_never_joins_the_next_line(tmp_path, monkeypatch):
    """Out of space mid-line: that begin is refused, and the next one goes to a fresh
    segment, so the torn half cannot swallow it at recovery."""
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    real_write = os.write
    monkeypatch.setattr(ledger_journal.os, "write", lambda fd, data: real_write(fd, data[:9]))
    with pytest.raises(LedgerUnavailable, match="short write"):
        await ledger.begin(Pending("id0", "r", None, "m", 0.5, False, 1.0))
    monkeypatch.undo()
    await ledger.begin(Pending("id1", "r", None, "m", 0.75, False, 1.0))
    ledger._journal = None  # a crash
    again = SqliteLedger(str(db))
    assert await again.open(2.0) == 1
    assert rows(db) == [("id1", "recovered", 0.75, 0.75)]
    await again.close()


async def test_the_wal_starts_over_under_steady_writes(tmp_path):
    """Checkpoints go by rows written (a commit can hold hundreds; counted by commits
    they never came) and restart the WAL: it stays bounded (it grew for ever)."""
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    sizes = []
    for batch in range(120):
        for i in range(100):
            row_id = f"{batch}-{i}-{os.urandom(8).hex()}"
            await ledger.begin(Pending(row_id, "r", "k", "m", 0.5, False, 1.0))
            ledger.finish(row_id, outcome())
        await ledger.flush()
        sizes.append(os.path.getsize(f"{db}-wal"))
    await ledger.close()
    # after the first checkpoint the WAL is written over from its start: its file
    # grows only past its earlier high-water mark, not by every commit
    grew = sum(after > before for before, after in zip(sizes[60:], sizes[61:]))
    assert grew < 10, sizes
    assert os.path.getsize(db) > 1024 * 1024  # the rows reached the database file


def test_reservation_ids_sort_by_time_and_stay_32_hex_digits():
    from policies.budget import new_id
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)  # appended at the end of the ledger's key index


async def test_two_workers_starting_together_both_recover_a_crashed_journal(tmp_path):
    """`--workers N` on one SQLite file after a kill -9 of them all: every worker reads
    the dead segments at start; one that finds them already cleared by another must
    start all the same (it crashed on FileNotFoundError), and the row is billed once."""
    db = tmp_path / "l.db"
    with open(f"{db}-begun.999999999.0", "wb") as file:  # a pid no process has
        file.write(b'["id9","r",null,"m",0.5,0,1.0]\n')
    first = SqliteLedger(str(db))
    second = ledger_journal.BegunJournal(str(db))
    assert second.left_behind() == [("id9", "r", None, "m", 0.5, 0, 1.0)]
    assert await first.open(1.0) == 1  # recovers and deletes the segment meanwhile
    second.clear()
    assert second.left_behind() == []
    real_getmtime = os.path.getmtime
    with open(f"{db}-begun.999999999.1", "wb") as file:
        file.write(b'["id8","r",null,"m",0.5,0,1.0]\n')

    def gone_meanwhile(path):  # listed by glob, deleted before it is looked at
        os.unlink(path)
        return real_getmtime(path)
    ledger_journal.os.path.getmtime = gone_meanwhile
    try:
        assert second.left_behind() == []
    finally:
        ledger_journal.os.path.getmtime = real_getmtime
    await first.close()
    assert rows(db) == [("id9", "recovered", 0.5, 0.5)]


async def test_a_short_write_missing_only_its_newline_is_not_billed(tmp_path, monkeypatch):
    """Out of space exactly before the newline: the begin was refused (503), so the
    complete-looking line must not be recovered and billed at the next start."""
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    await ledger.begin(Pending("id_", "r", None, "m", 0.25, False, 1.0))  # in flight: the
    real_write = os.write  # segment stays for recovery
    monkeypatch.setattr(ledger_journal.os, "write", lambda fd, data: real_write(fd, data[:-1]))
    with pytest.raises(LedgerUnavailable, match="short write"):
        await ledger.begin(Pending("id0", "r", None, "m", 0.5, False, 1.0))
    monkeypatch.undo()
    ledger.finish("id0", outcome())  # the budget settles a refused begin at nothing
    await ledger.begin(Pending("id1", "r", None, "m", 0.75, False, 1.0))
    ledger._journal = None  # a crash
    again = SqliteLedger(str(db))
    assert await again.open(2.0) == 2
    assert rows(db) == [("id1", "recovered", 0.75, 0.75), ("id_", "recovered", 0.25, 0.25)]
    await again.close()


async def test_a_dead_unreaped_process_segments_are_recovered(tmp_path):
    """`--workers N` killed with -9 as a group: until init reaps the workers they are
    zombies, which `kill(pid, 0)` still finds, and the workers starting again took
    their segments for a live process's: nothing was recovered (seen: 100 requests in
    flight, no row after the restart)."""
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs /proc")
    db = tmp_path / "l.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(500):  # exited, not waited for: a zombie
            with open(f"/proc/{dead.pid}/stat", "rb") as file:
                if file.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            __import__("time").sleep(0.01)
        with open(f"{db}-begun.{dead.pid}.0", "wb") as file:
            file.write(b'["id9","r",null,"m",0.5,0,1.0]\n')
        ledger = SqliteLedger(str(db))
        assert await ledger.open(1.0) == 1
        await ledger.close()
    finally:
        dead.wait()
    assert rows(db) == [("id9", "recovered", 0.5, 0.5)]


async def test_rows_the_writer_wrote_for_the_loop_count_towards_a_checkpoint(tmp_path,
                                                                             monkeypatch):
    """A commit the loop could not make (the file was locked: a checkpoint, another
    process) goes to the writer thread; its rows still bring the next checkpoint."""
    import proxy.state.ledger_direct as ledger_direct
    monkeypatch.setattr(ledger_direct, "CHECKPOINT_ROWS", 2)
    db = tmp_path / "l.db"
    ledger = SqliteLedger(str(db))
    await ledger.open(1.0)
    asked = []
    ledger._direct._checkpoint = lambda: asked.append(1)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    for i in range(2):
        await ledger.begin(Pending(f"id{i}", "r", "k", "m", 0.5, False, 1.0))
        ledger.finish(f"id{i}", outcome())
    ledger._direct.commit()  # locked: handed to the writer, which waits for the lock
    assert asked == []
    locker.execute("COMMIT")
    await ledger.flush()
    await asyncio.sleep(0)
    assert asked == [1]
    await ledger.close()
