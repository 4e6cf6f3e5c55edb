"""The spend table and how a connection to a SQLite ledger file is opened."""

from __future__ import annotations

import sqlite3

BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id TEXT PRIMARY KEY,            -- gateway-made, unique per exchange (attempts: id.N)
    request_id TEXT NOT NULL,
    key_name TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    target TEXT,
    state TEXT NOT NULL,            -- pending | done | interrupted (clean shutdown)
                                    -- | recovered (settled at its reservation after a crash)
    http_status INTEGER,            -- what the client got (an attempt row: the upstream's)
    error_class TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,   -- USD; for a pending row, 0 until settled
    reserved REAL NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0,  -- tokens counted by the gateway, not reported
    latency_ms REAL,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    stream INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,       -- seconds since the epoch, UTC
    finished_at REAL,
    parent TEXT                     -- an earlier attempt's row: its request's row id
);
CREATE INDEX IF NOT EXISTS spend_created ON spend (created_at);
CREATE INDEX IF NOT EXISTS spend_pending ON spend (state) WHERE state = 'pending';
"""


def connect(path: str, readonly: bool = False, synchronous: str = "FULL") -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # FULL or NORMAL, never client text
        conn.executescript(SCHEMA)
        _migrate(conn)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Move the WAL's pages into the database file and start the WAL over (RESTART).

    A PASSIVE checkpoint never lets the WAL start over while another connection
    keeps committing (the event loop's, every few milliseconds): it copied pages,
    but the file grew by every commit for ever (measured: 3.5 GB after 200,000
    requests) and its index, mapped into memory, grew the process's RSS. RESTART
    waits until no reader is on the old pages and holds new writers meanwhile (the
    loop's connection, which never waits, hands its rows to the writer thread).
    It waits at most 200 ms for a reader; a checkpoint that gives up is retried
    with the next one."""
    conn.execute("PRAGMA busy_timeout=200")
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()  # fetched: nothing left open
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger file written by an earlier version up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(spend)")}
    if "parent" not in columns:
        conn.execute("ALTER TABLE spend ADD COLUMN parent TEXT")
