"""The MongoDB catalog's pending notifications (private): the ``notices`` collection, one
document per study and destination under "study|destination" (a UID holds no "|"), indexed
by due time (``INDEXES`` of :mod:`micropacs.adapters.mongo`).

A claim is three steps that hold under concurrent routers, as the forward queues' are: read
the head's ids, lease those still free with a token of this claim, read back the ones that
carry it. Adding a performed step reads the document and writes it back only if its token
is unchanged (else again), so two steps noted at once both stay. Only ``$set``, ``$inc``
and ``$setOnInsert`` are used, which FerretDB answers like MongoDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import DuplicateKeyError

from micropacs.adapters._notices import merged, new_token, notice_of, steps_of, steps_to_json
from micropacs.ports import PendingNotice, StepReferences

COLLECTION = "notices"

_ORDER = [("due_at", ASCENDING), ("_id", ASCENDING)]
_ATTEMPTS = 5
"""Writes of one upsert before a conflict with concurrent ones is given up (raised)."""


def _id(study_uid: str, destination: str) -> str:
    return f"{study_uid}|{destination}"


def _notice(doc: dict[str, Any]) -> PendingNotice:
    return notice_of(
        str(doc["study"]),
        str(doc["destination"]),
        float(doc["due_at"]),
        int(doc.get("attempts", 0)),
        int(doc.get("bus_partition", -1)),
        int(doc.get("bus_offset", -1)),
        doc.get("steps", []),
        str(doc["token"]),
    )


async def note_instances(
    db: Any,
    study_uid: str,
    destinations: Sequence[str],
    due_at: float,
    bus_partition: int,
    bus_offset: int,
) -> None:
    """Create or postpone each destination's notice (see NoticeQueue.note_instances)."""
    operations = [
        UpdateOne(
            {"_id": _id(study_uid, destination)},
            {
                "$set": {
                    "study": study_uid,
                    "destination": destination,
                    "due_at": due_at,
                    "attempts": 0,
                    "bus_partition": bus_partition,
                    "bus_offset": bus_offset,
                    "token": new_token(),
                },
                "$setOnInsert": {"steps": [], "has_steps": False, "lease_until": 0.0},
            },
            upsert=True,
        )
        for destination in destinations
    ]
    for attempt in range(_ATTEMPTS):
        try:
            await db[COLLECTION].bulk_write(operations, ordered=False)
            return
        except DuplicateKeyError:  # two upserts of a new notice at once: the second updates
            if attempt == _ATTEMPTS - 1:
                raise


async def note_performed_step(
    db: Any, study_uid: str, destinations: Sequence[str], due_at: float, step: StepReferences
) -> None:
    """Add ``step`` to each destination's notice, creating it due at ``due_at``."""
    for destination in destinations:
        key = _id(study_uid, destination)
        for attempt in range(_ATTEMPTS):
            doc = await db[COLLECTION].find_one({"_id": key})
            steps = steps_to_json(merged(steps_of(doc.get("steps", [])) if doc else (), step))
            changes = {"steps": steps, "has_steps": True, "attempts": 0, "token": new_token()}
            if doc is None:
                try:
                    await db[COLLECTION].insert_one(
                        {
                            "_id": key,
                            "study": study_uid,
                            "destination": destination,
                            "due_at": due_at,
                            "bus_partition": -1,
                            "bus_offset": -1,
                            "lease_until": 0.0,
                            **changes,
                        }
                    )
                    break
                except DuplicateKeyError:
                    pass
            else:
                result = await db[COLLECTION].update_one(
                    {"_id": key, "token": doc["token"]}, {"$set": changes}
                )
                if result.matched_count:
                    break
            if attempt == _ATTEMPTS - 1:
                raise RuntimeError(f"notice {key} kept changing while a step was added")


async def claim(db: Any, now: float, limit: int, lease: float) -> list[PendingNotice]:
    """Lease the notices due or waiting for steps (see NoticeQueue.claim_notices)."""
    free = {
        "lease_until": {"$lte": now},
        "$or": [{"due_at": {"$lte": now}}, {"has_steps": True, "attempts": 0}],
    }
    head = await db[COLLECTION].find(free, {"_id": 1}).sort(_ORDER).limit(limit).to_list(None)
    if not head:
        return []
    ids = [doc["_id"] for doc in head]
    lease_token = uuid.uuid4().hex
    await db[COLLECTION].update_many(
        {**free, "_id": {"$in": ids}},
        {"$set": {"lease_until": now + lease, "lease_token": lease_token}},
    )
    claimed = (
        await db[COLLECTION].find({"_id": {"$in": ids}, "lease_token": lease_token}).to_list(None)
    )
    notices = [_notice(doc) for doc in claimed]
    return sorted(notices, key=lambda n: (n.due_at, n.study_instance_uid, n.destination))


async def settle(db: Any, notice: PendingNotice, retry_at: float | None) -> bool:
    """Remove or reschedule a claimed notice that was not noted again since its claim."""
    key = _id(notice.study_instance_uid, notice.destination)
    removed = False
    if retry_at is None:
        result = await db[COLLECTION].delete_one({"_id": key, "token": notice.token})
        removed = result.deleted_count > 0
    else:
        await db[COLLECTION].update_one(
            {"_id": key, "token": notice.token},
            {"$inc": {"attempts": 1}, "$set": {"due_at": retry_at}},
        )
    if not removed:
        await db[COLLECTION].update_one({"_id": key}, {"$set": {"lease_until": 0.0}})
    return removed


async def release(db: Any, notices: Sequence[PendingNotice]) -> None:
    """End the leases of ``notices``."""
    ids = [_id(n.study_instance_uid, n.destination) for n in notices]
    await db[COLLECTION].update_many({"_id": {"$in": ids}}, {"$set": {"lease_until": 0.0}})


async def backlog(db: Any) -> dict[str, int]:
    """Pending notices per destination (one read of the destinations' field)."""
    counts: dict[str, int] = {}
    async for doc in db[COLLECTION].find({}, {"destination": 1}):
        destination = str(doc["destination"])
        counts[destination] = counts.get(destination, 0) + 1
    return dict(sorted(counts.items()))
