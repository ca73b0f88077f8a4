"""The SQLite catalog's audit trail (private): one row per record, the whole record as
JSON, indexed by time, kind, actor and (in a second table) study UID.

The tables are created by the first write, so a catalog that never stored an audit
record needs no migration (and reads answer nothing until then).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from micropacs.adapters._audit import checked, document, record_of
from micropacs.ports import AuditQuery, AuditRecord

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        event_id TEXT PRIMARY KEY,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        outcome INTEGER NOT NULL,
        actor TEXT NOT NULL,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_time ON audit (time, event_id)",
    "CREATE INDEX IF NOT EXISTS audit_kind ON audit (kind, time)",
    "CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, time)",
    """CREATE TABLE IF NOT EXISTS audit_studies (
        study_uid TEXT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (study_uid, event_id)
    ) WITHOUT ROWID""",
)


def rows(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    """The documents of ``records`` (normalised before the writer's lock is taken)."""
    return [document(record) for record in records]


def put(conn: sqlite3.Connection, docs: Sequence[dict[str, Any]]) -> None:
    """Insert the records not stored yet, inside the caller's transaction."""
    for statement in SCHEMA:
        conn.execute(statement)
    conn.executemany(
        "INSERT OR IGNORE INTO audit (event_id, time, kind, outcome, actor, record)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (d["event_id"], d["time"], d["kind"], d["outcome"], d["actor"], json.dumps(d))
            for d in docs
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO audit_studies (study_uid, event_id) VALUES (?, ?)",
        [(uid, d["event_id"]) for d in docs for uid in d["study_uids"]],
    )


def select(conn: sqlite3.Connection, query: AuditQuery) -> list[AuditRecord]:
    """The records matching ``query``, newest first."""
    query = checked(query)
    where: list[str] = []
    args: list[object] = []
    for column, value in (("kind", query.kind), ("actor", query.actor)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since:
        where.append("time >= ?")
        args.append(query.since)
    if query.until:
        where.append("time < ?")
        args.append(query.until)
    if query.outcome is not None:
        where.append("outcome = ?")
        args.append(query.outcome)
    if query.study_uid:
        where.append("event_id IN (SELECT event_id FROM audit_studies WHERE study_uid = ?)")
        args.append(query.study_uid)
    sql = "SELECT record FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, event_id DESC LIMIT ? OFFSET ?"
    args += [query.limit if query.limit else -1, query.offset]
    try:
        found = conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # no audit record was ever stored
        raise
    return [record_of(json.loads(row[0])) for row in found]
