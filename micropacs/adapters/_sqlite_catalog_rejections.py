"""Rejected instances in the SQLite catalog (private; IOCM, docs/iocm.md).

A rejection is a row of ``rejections`` keyed by SOP Instance UID, written whether or not
the instance is held. A rejected instance leaves the ``instances`` table (with the
counters, computed attributes and emptied entities following, as for a removal) and its
row in ``rejections`` keeps what its deletion needs: its object key, receive time and
where it belongs. So every query, locate and count hides it with no condition of its
own, and an instance stored after its rejection goes straight to ``rejections``.
Everything here runs inside the writer's open transaction, so the rejection of an
instance and its store are ordered whichever comes first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from micropacs.adapters._received import received_by
from micropacs.adapters._sqlite_catalog_write import Batch, Prepared
from micropacs.ports import InstanceLocation, RejectedInstance, Rejection

_HOLD = (
    "UPDATE rejections SET series_uid = ?, study_uid = ?, sop_class_uid = ?, object_key = ?,"
    " transfer_syntax_uid = ?, size = ?, received_at = ?, patient_id = ?, issuer = ?"
    " WHERE sop_instance_uid = ?"
)


def _rejected(conn: sqlite3.Connection, uids: Sequence[str]) -> set[str]:
    rows = conn.execute(
        "SELECT sop_instance_uid FROM rejections"
        " WHERE sop_instance_uid IN (SELECT value FROM json_each(?))",
        (json.dumps(list(uids)),),
    )
    return {row[0] for row in rows}


def held_back(conn: sqlite3.Connection, batch: list[Prepared]) -> list[Prepared]:
    """The records of ``batch`` that are not rejected; the rejected ones are kept, hidden,
    in ``rejections`` (the latest record of an instance wins, as for the others)."""
    rejected = _rejected(conn, [item.record.sop_instance_uid for item in batch])
    if not rejected:
        return batch
    conn.executemany(
        _HOLD,
        [
            (
                r.series_instance_uid,
                r.study_instance_uid,
                r.sop_class_uid,
                r.object_key,
                r.transfer_syntax_uid,
                r.size,
                r.received_at,
                r.patient_id,
                r.issuer_of_patient_id,
                r.sop_instance_uid,
            )
            for r in (item.record for item in batch)
            if r.sop_instance_uid in rejected
        ],
    )
    return [item for item in batch if item.record.sop_instance_uid not in rejected]


def reject(conn: sqlite3.Connection, rejections: Sequence[Rejection]) -> int:
    """Record ``rejections`` (the first of an instance wins) and hide the instances held;
    how many were hidden."""
    conn.executemany(
        "INSERT INTO rejections (sop_instance_uid, series_uid, study_uid, note_uid, reason,"
        " rejected_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sop_instance_uid) DO NOTHING",
        [
            (
                r.sop_instance_uid,
                r.series_instance_uid,
                r.study_instance_uid,
                r.note_uid,
                r.reason,
                r.rejected_at,
            )
            for r in rejections
        ],
    )
    rows = conn.execute(
        "SELECT i.sop_instance_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.object_key,"
        " i.transfer_syntax_uid, i.size, i.received_at, p.patient_id, p.issuer"
        " FROM instances i JOIN studies s ON s.study_uid = i.study_uid"
        " JOIN patients p ON p.pk = s.patient_pk"
        " WHERE i.sop_instance_uid IN (SELECT value FROM json_each(?))",
        (json.dumps([r.sop_instance_uid for r in rejections]),),
    ).fetchall()
    if not rows:
        return 0
    conn.executemany(_HOLD, [(*row[1:], row[0]) for row in rows])
    Batch(conn).remove([(row[0], row[1], row[2]) for row in rows])
    return len(rows)


def held(conn: sqlite3.Connection, until: str, limit: int) -> list[RejectedInstance]:
    """The held rejected instances rejected by ``until``, oldest rejection first."""
    rows = conn.execute(
        "SELECT sop_instance_uid, series_uid, study_uid, object_key, reason, rejected_at"
        " FROM rejections WHERE object_key IS NOT NULL AND rejected_at <= ?"
        " ORDER BY rejected_at, sop_instance_uid LIMIT ?",
        (until, limit),
    ).fetchall()
    return [
        RejectedInstance(
            sop_instance_uid=row[0],
            series_instance_uid=row[1],
            study_instance_uid=row[2],
            object_key=row[3],
            reason=row[4],
            rejected_at=row[5],
        )
        for row in rows
    ]


def release(
    conn: sqlite3.Connection, study: str, series: str, instance: str, until: str
) -> list[str]:
    """Forget the objects of the target's held rejected instances received by ``until``
    (a removal), keeping their rejections; their object keys."""
    sql = (
        "SELECT sop_instance_uid, object_key, received_at FROM rejections"
        " WHERE object_key IS NOT NULL AND study_uid = ?"
    )
    params = [study]
    if series:
        sql += " AND series_uid = ?"
        params.append(series)
    if instance:
        sql += " AND sop_instance_uid = ?"
        params.append(instance)
    rows = [row for row in conn.execute(sql, params) if received_by(row[2] or "", until)]
    conn.executemany(
        "UPDATE rejections SET sop_class_uid = NULL, object_key = NULL,"
        " transfer_syntax_uid = NULL, size = NULL, received_at = NULL, patient_id = NULL,"
        " issuer = NULL WHERE sop_instance_uid = ?",
        [(row[0],) for row in rows],
    )
    return [row[1] for row in rows]


def located(
    conn: sqlite3.Connection,
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    sop_instance_uids: Sequence[str],
) -> list[InstanceLocation]:
    """The held rejected instances under the given entities (every non-empty filter)."""
    where = ["object_key IS NOT NULL"]
    params: list[Any] = []
    for column, values in (
        ("study_uid", study_uids),
        ("series_uid", series_uids),
        ("sop_instance_uid", sop_instance_uids),
    ):
        if values:
            where.append(f"{column} IN (SELECT value FROM json_each(?))")
            params.append(json.dumps([str(v) for v in values]))
    rows = conn.execute(
        "SELECT sop_instance_uid, sop_class_uid, series_uid, study_uid, object_key,"
        f" transfer_syntax_uid, size FROM rejections WHERE {' AND '.join(where)}"
        " ORDER BY study_uid, series_uid, sop_instance_uid",
        params,
    ).fetchall()
    return [
        InstanceLocation(
            sop_instance_uid=row[0],
            sop_class_uid=row[1],
            series_instance_uid=row[2],
            study_instance_uid=row[3],
            object_key=row[4],
            transfer_syntax_uid=row[5],
            size=row[6],
        )
        for row in rows
    ]
