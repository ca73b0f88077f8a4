"""The SQLite catalog's forward queues (private): one row per entry, indexed by destination,
state and enqueue time, so a claim reads the head of one queue and counts stay in the index.

The table is created by the first write, so a catalog that never queued anything needs no
migration (and reads answer nothing until then). Claims run in the writer's transaction,
so two routers sharing the file never claim one entry twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from micropacs.adapters._forwards import entry_of, fixed_of
from micropacs.ports import ForwardEntry, ForwardFailure, ForwardQueueStats, ForwardState

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS forwards (
        entry_id TEXT PRIMARY KEY,
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        enqueued_at REAL NOT NULL,
        due_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        fixed TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS forwards_queue"
    " ON forwards (destination, state, enqueued_at, entry_id)",
)

_COLUMNS = "entry_id, destination, state, enqueued_at, due_at, attempts, last_error, fixed"
_WAITING = ForwardState.WAITING.value
_DEAD = ForwardState.DEAD.value


def _entry(row: Sequence[object]) -> ForwardEntry:
    return entry_of(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        float(row[3]),  # type: ignore[arg-type]
        float(row[4]),  # type: ignore[arg-type]
        int(row[5]),  # type: ignore[call-overload]
        str(row[6]),
        json.loads(str(row[7])),
    )


def ensure(conn: sqlite3.Connection) -> None:
    """Create the table and its index if needed, inside the caller's transaction."""
    for statement in SCHEMA:
        conn.execute(statement)


def reading(conn: sqlite3.Connection, read: Callable[[], T], empty: T) -> T:
    """``read()``, or ``empty`` when nothing was ever queued (no table yet)."""
    try:
        return read()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty
        raise


def enqueue(conn: sqlite3.Connection, entries: Sequence[ForwardEntry]) -> None:
    """Insert the entries not queued yet."""
    ensure(conn)
    conn.executemany(
        f"INSERT OR IGNORE INTO forwards ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.entry_id,
                e.destination,
                e.state.value,
                e.enqueued_at,
                e.due_at or e.enqueued_at,
                e.attempts,
                e.last_error,
                json.dumps(fixed_of(e), separators=(",", ":")),
            )
            for e in entries
        ],
    )


def claim(
    conn: sqlite3.Connection, destination: str, now: float, limit: int, lease: float
) -> list[ForwardEntry]:
    """Lease the head of ``destination``'s queue (see ForwardQueue.claim_forwards)."""
    ensure(conn)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM forwards"
        " WHERE destination = ? AND state = ? AND due_at <= ? AND lease_until <= ?"
        " ORDER BY enqueued_at, entry_id LIMIT ?",
        (destination, _WAITING, now, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE forwards SET lease_until = ? WHERE entry_id = ?",
        [(now + lease, row[0]) for row in rows],
    )
    return [_entry(row) for row in rows]


def complete(conn: sqlite3.Connection, entry_ids: Sequence[str]) -> None:
    """Delete sent entries."""
    ensure(conn)
    conn.executemany("DELETE FROM forwards WHERE entry_id = ?", [(i,) for i in entry_ids])


def fail(conn: sqlite3.Connection, failures: Sequence[ForwardFailure]) -> None:
    """Count the failed attempts and schedule the next ones (or give up)."""
    ensure(conn)
    conn.executemany(
        "UPDATE forwards SET attempts = attempts + 1, last_error = ?, lease_until = 0,"
        " due_at = ?, state = ? WHERE entry_id = ?",
        [(f.error, f.due_at, _DEAD if f.dead else _WAITING, f.entry_id) for f in failures],
    )


def expire(conn: sqlite3.Connection, destination: str, before: float, error: str) -> int:
    """Make the waiting entries enqueued before ``before`` dead."""
    ensure(conn)
    cursor = conn.execute(
        "UPDATE forwards SET state = ?, last_error = ?, lease_until = 0"
        " WHERE destination = ? AND state = ? AND enqueued_at < ?",
        (_DEAD, error, destination, _WAITING, before),
    )
    return int(cursor.rowcount)


def stats(conn: sqlite3.Connection) -> list[ForwardQueueStats]:
    """Counts and the oldest waiting entry per destination, from the index."""

    def read() -> list[ForwardQueueStats]:
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for destination, state, count, oldest in conn.execute(
            "SELECT destination, state, count(*), min(enqueued_at) FROM forwards"
            " GROUP BY destination, state ORDER BY destination"
        ):
            found.setdefault(destination, {})[state] = (int(count), float(oldest))
        return [
            ForwardQueueStats(
                destination=destination,
                waiting=states.get(_WAITING, (0, 0.0))[0],
                dead=states.get(_DEAD, (0, 0.0))[0],
                oldest_waiting=states[_WAITING][1] if _WAITING in states else None,
            )
            for destination, states in found.items()
        ]

    return reading(conn, read, [])


def page(
    conn: sqlite3.Connection,
    destination: str,
    state: ForwardState | None,
    limit: int,
    offset: int,
) -> list[ForwardEntry]:
    """A page of one destination's entries, oldest enqueued first."""
    where, args = "destination = ?", [destination]
    if state is not None:
        where += " AND state = ?"
        args.append(state.value)

    def read() -> list[ForwardEntry]:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM forwards WHERE {where}"
            " ORDER BY enqueued_at, entry_id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_entry(row) for row in rows]

    return reading(conn, read, [])


def retry(conn: sqlite3.Connection, destination: str, entry_ids: Sequence[str], now: float) -> int:
    """Make entries waiting again, due now, their attempts and age starting over."""
    ensure(conn)
    change = (
        "UPDATE forwards SET state = ?, attempts = 0, due_at = ?, enqueued_at = ?,"
        " lease_until = 0 WHERE destination = ?"
    )
    if not entry_ids:
        cursor = conn.execute(f"{change} AND state = ?", (_WAITING, now, now, destination, _DEAD))
        return int(cursor.rowcount)
    changed = 0
    for entry_id in entry_ids:
        cursor = conn.execute(
            f"{change} AND entry_id = ?", (_WAITING, now, now, destination, entry_id)
        )
        changed += int(cursor.rowcount)
    return changed


def cancel(
    conn: sqlite3.Connection,
    destination: str,
    entry_ids: Sequence[str],
    state: ForwardState | None,
) -> int:
    """Delete entries of one destination."""
    ensure(conn)
    if entry_ids:
        removed = 0
        for entry_id in entry_ids:
            cursor = conn.execute(
                "DELETE FROM forwards WHERE destination = ? AND entry_id = ?",
                (destination, entry_id),
            )
            removed += int(cursor.rowcount)
        return removed
    if state is None:
        cursor = conn.execute("DELETE FROM forwards WHERE destination = ?", (destination,))
    else:
        cursor = conn.execute(
            "DELETE FROM forwards WHERE destination = ? AND state = ?", (destination, state.value)
        )
    return int(cursor.rowcount)
