"""The SQLite catalog's pending notifications (private): one row per study and destination,
indexed by due time, so a claim reads the head of the queue and the performed steps' rows
are found without a scan.

The table is created by the first write, so a catalog that never noted anything needs no
migration (and reads answer nothing until then). Claims run in the writer's transaction,
so two routers sharing the file never claim one notice twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from micropacs.adapters._notices import merged, new_token, notice_of, steps_of, steps_to_json
from micropacs.ports import PendingNotice, StepReferences

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS notices (
        study_uid TEXT NOT NULL,
        destination TEXT NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        bus_partition INTEGER NOT NULL DEFAULT -1,
        bus_offset INTEGER NOT NULL DEFAULT -1,
        steps TEXT NOT NULL DEFAULT '[]',
        has_steps INTEGER NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0,
        token TEXT NOT NULL,
        PRIMARY KEY (study_uid, destination)
    )""",
    "CREATE INDEX IF NOT EXISTS notices_due ON notices (due_at)",
    "CREATE INDEX IF NOT EXISTS notices_steps ON notices (has_steps, due_at)",
)

_COLUMNS = "study_uid, destination, due_at, attempts, bus_partition, bus_offset, steps, token"


def _notice(row: Sequence[object]) -> PendingNotice:
    return notice_of(
        str(row[0]),
        str(row[1]),
        float(row[2]),  # type: ignore[arg-type]
        int(row[3]),  # type: ignore[call-overload]
        int(row[4]),  # type: ignore[call-overload]
        int(row[5]),  # type: ignore[call-overload]
        str(row[6]),
        str(row[7]),
    )


def ensure(conn: sqlite3.Connection) -> None:
    """Create the table and its indexes if needed, inside the caller's transaction."""
    for statement in SCHEMA:
        conn.execute(statement)


def note_instances(
    conn: sqlite3.Connection,
    study_uid: str,
    destinations: Sequence[str],
    due_at: float,
    bus_partition: int,
    bus_offset: int,
) -> None:
    """Create or postpone each destination's notice (see NoticeQueue.note_instances)."""
    ensure(conn)
    conn.executemany(
        f"INSERT INTO notices ({_COLUMNS}) VALUES (?, ?, ?, 0, ?, ?, '[]', ?)"
        " ON CONFLICT (study_uid, destination) DO UPDATE SET due_at = excluded.due_at,"
        " attempts = 0, bus_partition = excluded.bus_partition,"
        " bus_offset = excluded.bus_offset, token = excluded.token",
        [
            (study_uid, destination, due_at, bus_partition, bus_offset, new_token())
            for destination in destinations
        ],
    )


def note_performed_step(
    conn: sqlite3.Connection,
    study_uid: str,
    destinations: Sequence[str],
    due_at: float,
    step: StepReferences,
) -> None:
    """Add ``step`` to each destination's notice, creating it due at ``due_at``."""
    ensure(conn)
    for destination in destinations:
        row = conn.execute(
            "SELECT steps FROM notices WHERE study_uid = ? AND destination = ?",
            (study_uid, destination),
        ).fetchone()
        steps = json.dumps(steps_to_json(merged(steps_of(row[0]) if row else (), step)))
        if row is None:
            conn.execute(
                f"INSERT INTO notices ({_COLUMNS}, has_steps) VALUES (?, ?, ?, 0, -1, -1, ?, ?, 1)",
                (study_uid, destination, due_at, steps, new_token()),
            )
        else:
            conn.execute(
                "UPDATE notices SET steps = ?, has_steps = 1, attempts = 0, token = ?"
                " WHERE study_uid = ? AND destination = ?",
                (steps, new_token(), study_uid, destination),
            )


def claim(conn: sqlite3.Connection, now: float, limit: int, lease: float) -> list[PendingNotice]:
    """Lease the notices due or waiting for steps (see NoticeQueue.claim_notices)."""
    ensure(conn)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notices WHERE lease_until <= ? AND due_at <= ?"
        f" UNION SELECT {_COLUMNS} FROM notices"
        " WHERE lease_until <= ? AND has_steps = 1 AND attempts = 0"
        " ORDER BY due_at, study_uid, destination LIMIT ?",
        (now, now, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE notices SET lease_until = ? WHERE study_uid = ? AND destination = ?",
        [(now + lease, row[0], row[1]) for row in rows],
    )
    return [_notice(row) for row in rows]


def settle(conn: sqlite3.Connection, notice: PendingNotice, retry_at: float | None) -> bool:
    """Remove or reschedule a claimed notice that was not noted again since its claim."""
    ensure(conn)
    key = (notice.study_instance_uid, notice.destination)
    if retry_at is None:
        cursor = conn.execute(
            "DELETE FROM notices WHERE study_uid = ? AND destination = ? AND token = ?",
            (*key, notice.token),
        )
        removed = cursor.rowcount > 0
    else:
        conn.execute(
            "UPDATE notices SET attempts = attempts + 1, due_at = ?"
            " WHERE study_uid = ? AND destination = ? AND token = ?",
            (retry_at, *key, notice.token),
        )
        removed = False
    conn.execute("UPDATE notices SET lease_until = 0 WHERE study_uid = ? AND destination = ?", key)
    return removed


def release(conn: sqlite3.Connection, notices: Sequence[PendingNotice]) -> None:
    """End the leases of ``notices``."""
    ensure(conn)
    conn.executemany(
        "UPDATE notices SET lease_until = 0 WHERE study_uid = ? AND destination = ?",
        [(n.study_instance_uid, n.destination) for n in notices],
    )


def backlog(conn: sqlite3.Connection) -> dict[str, int]:
    """Pending notices per destination."""
    try:
        rows = conn.execute(
            "SELECT destination, count(*) FROM notices GROUP BY destination ORDER BY destination"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return {str(destination): int(count) for destination, count in rows}
