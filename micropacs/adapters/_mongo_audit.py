"""The MongoDB catalog's audit trail (private): the ``audit`` collection, one document
per record under its event id, indexed by time, kind, actor and study UIDs
(``INDEXES`` of :mod:`micropacs.adapters.mongo`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import DESCENDING, ReplaceOne

from micropacs.adapters._audit import checked, document, record_of
from micropacs.ports import AuditQuery, AuditRecord

COLLECTION = "audit"

_STATEMENTS_PER_WRITE = 16
"""Replacements per bulk write (FerretDB on PostgreSQL holds a connection per statement)."""


async def put(db: Any, records: Sequence[AuditRecord]) -> None:
    """Store the records; idempotent (a replayed record replaces itself, unchanged)."""
    operations = []
    for record in records:
        doc = document(record)
        doc["_id"] = record.event_id
        operations.append(ReplaceOne({"_id": record.event_id}, doc, upsert=True))
    for start in range(0, len(operations), _STATEMENTS_PER_WRITE):
        await db[COLLECTION].bulk_write(
            operations[start : start + _STATEMENTS_PER_WRITE], ordered=False
        )


async def select(db: Any, query: AuditQuery) -> list[AuditRecord]:
    """The records matching ``query``, newest first."""
    query = checked(query)
    found: dict[str, Any] = {}
    for name, value in (
        ("kind", query.kind),
        ("actor", query.actor),
        ("study_uids", query.study_uid),
    ):
        if value:
            found[name] = value
    if query.outcome is not None:
        found["outcome"] = query.outcome
    times: dict[str, str] = {}
    if query.since:
        times["$gte"] = query.since
    if query.until:
        times["$lt"] = query.until
    if times:
        found["time"] = times
    cursor = (
        db[COLLECTION]
        .find(found)
        .sort([("time", DESCENDING), ("_id", DESCENDING)])
        .skip(query.offset)
        .limit(query.limit)
    )
    return [record_of(doc) for doc in await cursor.to_list(None)]
