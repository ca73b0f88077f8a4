"""What both SQLite adapters (the event log and the catalog) do alike (private).

Several processes may share one file (ingest workers publishing, the index
writing the catalog while the CLI reads it): a write waits for the others'
locks up to the adapter's ``busy_timeout`` instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode, usable from any thread (callers serialise its use).

    SQLite's own wait for a lock is capped at five seconds; :func:`retry`
    waits the rest of ``busy_timeout`` with backoff, between statements.
    """
    return sqlite3.connect(
        path, isolation_level=None, timeout=min(busy_timeout, 5.0), check_same_thread=False
    )


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds a lock (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and (code & 0xFF) in _BUSY) or "locked" in str(exc)


def retry(attempt: Callable[[], T], busy_timeout: float) -> T:
    """Run ``attempt``, again while another connection holds the lock, up to ``busy_timeout``."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def write_transaction(
    conn: sqlite3.Connection, run: Callable[[sqlite3.Connection], T], busy_timeout: float
) -> T:
    """``run`` in one ``BEGIN IMMEDIATE`` transaction, retried while the file is locked.

    The write lock is taken at BEGIN, so a transaction never fails half-way
    for want of it; any error rolls the transaction back.
    """

    def attempt() -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = run(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    return retry(attempt, busy_timeout)


def use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Write-ahead logging with ``synchronous=FULL``: every COMMIT is fsynced.

    ``NORMAL`` would survive a process crash but not a power loss, and both
    adapters acknowledge writes that must survive it (ARCHITECTURE.md rules 1, 2).
    """
    retry(lambda: conn.execute("PRAGMA journal_mode=WAL"), busy_timeout)
    conn.execute("PRAGMA synchronous=FULL")
