"""The MongoDB catalog's forward queues (private): the ``forwards`` collection, one document
per entry under its entry id, indexed by destination and enqueue time (``INDEXES`` of
:mod:`micropacs.adapters.mongo`).

A claim is three steps that hold under concurrent routers: read the head's ids, lease
those still free with a token of this claim (each document's update is atomic), and read
back the ones that carry the token. Only the operators' ``$set``, ``$inc`` and
``$setOnInsert`` are used, which FerretDB answers like MongoDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne

from micropacs.adapters._forwards import entry_of, fixed_of
from micropacs.ports import ForwardEntry, ForwardFailure, ForwardQueueStats, ForwardState

COLLECTION = "forwards"

_STATEMENTS_PER_WRITE = 16
"""Updates per bulk write (FerretDB on PostgreSQL holds a connection per statement)."""
_ORDER = [("enqueued_at", ASCENDING), ("_id", ASCENDING)]
_WAITING = ForwardState.WAITING.value
_DEAD = ForwardState.DEAD.value


def _entry(doc: dict[str, Any]) -> ForwardEntry:
    return entry_of(
        str(doc["_id"]),
        str(doc["destination"]),
        str(doc["state"]),
        float(doc["enqueued_at"]),
        float(doc["due_at"]),
        int(doc.get("attempts", 0)),
        str(doc.get("last_error", "")),
        dict(doc.get("fixed", {})),
    )


async def _bulk(db: Any, operations: list[Any]) -> None:
    for start in range(0, len(operations), _STATEMENTS_PER_WRITE):
        await db[COLLECTION].bulk_write(
            operations[start : start + _STATEMENTS_PER_WRITE], ordered=False
        )


async def enqueue(db: Any, entries: Sequence[ForwardEntry]) -> None:
    """Insert the entries not queued yet (an existing one is left as it is)."""
    operations = [
        UpdateOne(
            {"_id": e.entry_id},
            {
                "$setOnInsert": {
                    "destination": e.destination,
                    "state": e.state.value,
                    "enqueued_at": e.enqueued_at,
                    "due_at": e.due_at or e.enqueued_at,
                    "lease_until": 0.0,
                    "attempts": e.attempts,
                    "last_error": e.last_error,
                    "fixed": fixed_of(e),
                }
            },
            upsert=True,
        )
        for e in entries
    ]
    await _bulk(db, operations)


async def claim(
    db: Any, destination: str, now: float, limit: int, lease: float
) -> list[ForwardEntry]:
    """Lease the head of ``destination``'s queue (see ForwardQueue.claim_forwards)."""
    free = {
        "destination": destination,
        "state": _WAITING,
        "due_at": {"$lte": now},
        "lease_until": {"$lte": now},
    }
    head = await db[COLLECTION].find(free, {"_id": 1}).sort(_ORDER).limit(limit).to_list(None)
    if not head:
        return []
    ids = [doc["_id"] for doc in head]
    token = uuid.uuid4().hex
    await db[COLLECTION].update_many(
        {**free, "_id": {"$in": ids}},
        {"$set": {"lease_until": now + lease, "lease_token": token}},
    )
    claimed = await db[COLLECTION].find({"_id": {"$in": ids}, "lease_token": token}).to_list(None)
    return sorted((_entry(doc) for doc in claimed), key=lambda e: (e.enqueued_at, e.entry_id))


async def complete(db: Any, entry_ids: Sequence[str]) -> None:
    """Delete sent entries."""
    await db[COLLECTION].delete_many({"_id": {"$in": list(entry_ids)}})


async def fail(db: Any, failures: Sequence[ForwardFailure]) -> None:
    """Count the failed attempts and schedule the next ones (or give up)."""
    operations = [
        UpdateOne(
            {"_id": f.entry_id},
            {
                "$inc": {"attempts": 1},
                "$set": {
                    "last_error": f.error,
                    "lease_until": 0.0,
                    "due_at": f.due_at,
                    "state": _DEAD if f.dead else _WAITING,
                },
            },
        )
        for f in failures
    ]
    await _bulk(db, operations)


async def expire(db: Any, destination: str, before: float, error: str) -> int:
    """Make the waiting entries enqueued before ``before`` dead."""
    result = await db[COLLECTION].update_many(
        {"destination": destination, "state": _WAITING, "enqueued_at": {"$lt": before}},
        {"$set": {"state": _DEAD, "last_error": error, "lease_until": 0.0}},
    )
    return int(result.modified_count)


async def stats(db: Any) -> list[ForwardQueueStats]:
    """Counts and the oldest waiting entry per destination (counted by the server)."""
    found = []
    collection = db[COLLECTION]
    for destination in sorted(await collection.distinct("destination")):
        waiting = await collection.count_documents({"destination": destination, "state": _WAITING})
        dead = await collection.count_documents({"destination": destination, "state": _DEAD})
        oldest = None
        if waiting:
            head = await collection.find_one(
                {"destination": destination, "state": _WAITING},
                {"enqueued_at": 1},
                sort=_ORDER,
            )
            oldest = float(head["enqueued_at"]) if head else None
        if waiting or dead:
            found.append(ForwardQueueStats(destination, waiting, dead, oldest))
    return found


async def page(
    db: Any, destination: str, state: ForwardState | None, limit: int, offset: int
) -> list[ForwardEntry]:
    """A page of one destination's entries, oldest enqueued first."""
    where: dict[str, Any] = {"destination": destination}
    if state is not None:
        where["state"] = state.value
    cursor = db[COLLECTION].find(where).sort(_ORDER).skip(offset).limit(limit)
    return [_entry(doc) for doc in await cursor.to_list(None)]


async def retry(db: Any, destination: str, entry_ids: Sequence[str], now: float) -> int:
    """Make entries waiting again, due now, their attempts and age starting over."""
    where: dict[str, Any] = {"destination": destination}
    if entry_ids:
        where["_id"] = {"$in": list(entry_ids)}
    else:
        where["state"] = _DEAD
    result = await db[COLLECTION].update_many(
        where,
        {
            "$set": {
                "state": _WAITING,
                "attempts": 0,
                "due_at": now,
                "enqueued_at": now,
                "lease_until": 0.0,
            }
        },
    )
    return int(result.matched_count)


async def cancel(
    db: Any, destination: str, entry_ids: Sequence[str], state: ForwardState | None
) -> int:
    """Delete entries of one destination."""
    where: dict[str, Any] = {"destination": destination}
    if entry_ids:
        where["_id"] = {"$in": list(entry_ids)}
    elif state is not None:
        where["state"] = state.value
    result = await db[COLLECTION].delete_many(where)
    return int(result.deleted_count)
