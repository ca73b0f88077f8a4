"""Storage groups in the SQLite catalog (private; retention and tiering, docs/lifecycle.md).

No table of its own: a study's part in a group is summed from ``instances`` (its group,
size and receive time are columns there), and a move is one ``UPDATE`` per instance in
one write transaction, so every reader sees the study's instances all at their old keys
or all at their new ones. The storage groups' aggregate (``storage_usage``) follows
through its triggers. Rejected instances have left ``instances`` (IOCM) and are neither
listed nor moved.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from micropacs.ports import InstanceMove, StoredInstance, StudyInGroup

_MOVE = (
    "UPDATE instances SET object_key = ?, storage_group = ?"
    " WHERE sop_instance_uid = ? AND study_uid = ? AND object_key = ? AND received_at = ?"
)


def studies(
    conn: sqlite3.Connection,
    storage_group: str,
    received_before: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[StudyInGroup]:
    """The studies with instances in ``storage_group``, least recently received first.

    One pass over the instances (grouped by study through the study index): a nightly
    run over millions of instances takes seconds, and no index is kept for it."""
    having = ["1"]
    args: list[object] = [storage_group]
    if received_before is not None:
        having.append("last < ?")
        args.append(received_before)
    if after is not None:
        having.append("(last, study_uid) > (?, ?)")
        args.extend(after)
    args.append(limit)
    rows = conn.execute(
        "SELECT study_uid, count(*), coalesce(sum(size), 0), max(received_at) AS last"
        " FROM instances WHERE storage_group = ? GROUP BY study_uid"
        f" HAVING {' AND '.join(having)} ORDER BY last, study_uid LIMIT ?",
        args,
    ).fetchall()
    return [
        StudyInGroup(str(study), storage_group, int(count), int(size), str(last))
        for study, count, size, last in rows
    ]


def stored(conn: sqlite3.Connection, study_uid: str) -> list[StoredInstance]:
    """The study's instances with their group, key, size and receive time."""
    rows = conn.execute(
        "SELECT sop_instance_uid, series_uid, storage_group, object_key, size, received_at,"
        " sha256 FROM instances WHERE study_uid = ? ORDER BY series_uid, sop_instance_uid",
        (study_uid,),
    ).fetchall()
    return [
        StoredInstance(
            sop_instance_uid=row[0],
            series_instance_uid=row[1],
            study_instance_uid=study_uid,
            storage_group=row[2],
            object_key=row[3],
            size=int(row[4]),
            received_at=row[5],
            sha256=row[6] or "",
        )
        for row in rows
    ]


def move(conn: sqlite3.Connection, study_uid: str, moves: Sequence[InstanceMove]) -> int:
    """Switch the instances to their new keys, inside the writer's open transaction."""
    moved = 0
    for one in moves:
        cursor = conn.execute(
            _MOVE,
            (
                one.object_key,
                one.storage_group,
                one.sop_instance_uid,
                study_uid,
                one.from_key,
                one.received_at,
            ),
        )
        moved += cursor.rowcount
    return moved
