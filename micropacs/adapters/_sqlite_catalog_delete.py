"""Removing instances from the SQLite catalog (private): one transaction per call.

The whole removal of a study, series or instance, its counters and the
entities it leaves empty, commits at once or not at all, so a crash leaves the
target either wholly there or wholly gone (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import sqlite3

from micropacs.adapters import _sqlite_catalog_rejections as _rejections
from micropacs.adapters._received import received_by
from micropacs.adapters._sqlite_catalog_write import Batch


def remove(
    conn: sqlite3.Connection, study: str, series: str, instance: str, until: str
) -> list[str]:
    """Remove the target's instances received by ``until`` in the writer's open
    transaction, the rejected ones too; the object keys of those removed."""
    sql = (
        "SELECT sop_instance_uid, series_uid, study_uid, object_key, received_at"
        " FROM instances WHERE study_uid = ?"
    )
    params = [study]
    if series:
        sql += " AND series_uid = ?"
        params.append(series)
    if instance:
        sql += " AND sop_instance_uid = ?"
        params.append(instance)
    rows = [row for row in conn.execute(sql, params) if received_by(row[4], until)]
    if rows:
        Batch(conn).remove([(row[0], row[1], row[2]) for row in rows])
    return [row[3] for row in rows] + _rejections.release(conn, study, series, instance, until)
