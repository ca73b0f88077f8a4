"""Rejected instances in the MongoDB catalog (private; IOCM, docs/iocm.md).

A rejection is a document of ``rejections`` whose ``_id`` is the rejected SOP Instance
UID, written whether or not the instance is held. A rejected instance leaves the
``instances`` collection and its series' members (the computed attributes derived again
delete the series, study and patient it leaves empty), and its rejection document keeps,
under ``held``, what its deletion needs. So every query, locate and count hides it with
no condition of its own.

Without transactions the steps are ordered so that a crash is finished by the event's
redelivery: the rejection is written first, then ``held``, then the instance deleted,
then pulled from its series (from the series its rejection names, so a crash after the
deletion still pulls it), then the computed attributes derived. A store and a rejection
of the same instance racing each other (another study's note) are settled by a second
look after the store (:func:`rejected_among`): each writes before it reads the other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from micropacs.adapters._mongo_write import bulk, by_id, derive_series, patient_key
from micropacs.adapters._received import received_by
from micropacs.ports import InstanceLocation, InstanceRecord, RejectedInstance, Rejection

Document = dict[str, Any]

COLLECTION = "rejections"
HELD = "held"
"""The field of a rejection holding its instance's location while the catalog keeps it."""
INDEXED = ("rejected_at", "study", "series")
"""Fields of ``rejections`` with an index."""


async def rejected_among(db: AsyncDatabase[Document], uids: Sequence[str]) -> set[str]:
    """Which of these SOP Instance UIDs are rejected (one query; the collection is small,
    rejections being rare, so even a server that scans it for ``$in`` answers fast)."""
    if not uids:
        return set()
    docs = await db[COLLECTION].find({"_id": {"$in": sorted(set(uids))}}, {"_id": 1}).to_list(None)
    return {str(doc["_id"]) for doc in docs}


def _held(record: InstanceRecord) -> Document:
    return {
        "sop_class": record.sop_class_uid,
        "object_key": record.object_key,
        "transfer_syntax": record.transfer_syntax_uid,
        "size": record.size,
        "received_at": record.received_at,
        "patient_id": record.patient_id,
        "patient_key": patient_key(record),
    }


async def held_back(
    db: AsyncDatabase[Document], records: Sequence[InstanceRecord]
) -> list[InstanceRecord]:
    """The records that are not rejected; the rejected ones are kept, hidden, in their
    rejection documents."""
    rejected = await rejected_among(db, [r.sop_instance_uid for r in records])
    if not rejected:
        return list(records)
    latest = {r.sop_instance_uid: r for r in records if r.sop_instance_uid in rejected}
    await bulk(
        db,
        COLLECTION,
        [
            UpdateOne(
                {"_id": uid},
                {
                    "$set": {
                        HELD: _held(r),
                        "series": r.series_instance_uid,
                        "study": r.study_instance_uid,
                    }
                },
            )
            for uid, r in latest.items()
        ],
    )
    return [r for r in records if r.sop_instance_uid not in rejected]


async def reject(db: AsyncDatabase[Document], rejections: Sequence[Rejection]) -> int:
    """Record ``rejections`` (the first of an instance wins) and hide the instances held;
    how many were hidden."""
    await bulk(
        db,
        COLLECTION,
        [
            UpdateOne(
                {"_id": r.sop_instance_uid},
                {
                    "$setOnInsert": {
                        "series": r.series_instance_uid,
                        "study": r.study_instance_uid,
                        "note": r.note_uid,
                        "reason": r.reason,
                        "rejected_at": r.rejected_at,
                    }
                },
                upsert=True,
            )
            for r in rejections
        ],
    )
    return await hide(db, [r.sop_instance_uid for r in rejections])


async def hide(db: AsyncDatabase[Document], uids: Sequence[str]) -> int:
    """Move the held instances of these rejected UIDs out of ``instances`` and their
    series; how many were still there."""
    docs = await by_id(db, "instances", uids)
    await bulk(
        db,
        COLLECTION,
        [
            UpdateOne(
                {"_id": uid},
                {
                    "$set": {
                        HELD: {
                            "sop_class": doc["sop_class"],
                            "object_key": doc["object_key"],
                            "transfer_syntax": doc.get("transfer_syntax", ""),
                            "size": int(doc.get("size", 0)),
                            "received_at": doc.get("received_at", ""),
                            "patient_id": str(doc.get("patient_key", "|")).split("|", 1)[1],
                            "patient_key": doc.get("patient_key", "|"),
                        },
                        "series": doc["series"],
                        "study": doc["study"],
                    }
                },
            )
            for uid, doc in docs.items()
        ],
    )
    await bulk(db, "instances", [DeleteOne({"_id": uid}) for uid in sorted(docs)])
    rejections = await by_id(db, COLLECTION, uids, {"series": 1})
    series_uids = {str(doc["series"]) for doc in rejections.values()}
    series_uids.update(str(doc["series"]) for doc in docs.values())
    series_docs = await by_id(db, "series", series_uids, {"members": 1})
    wanted = set(uids)
    pulls = {
        uid: sorted(m for m in doc.get("members", []) if m.split("|", 1)[-1] in wanted)
        for uid, doc in series_docs.items()
    }
    pulls = {uid: gone for uid, gone in pulls.items() if gone}
    await bulk(
        db,
        "series",
        [UpdateOne({"_id": uid}, {"$pullAll": {"members": gone}}) for uid, gone in pulls.items()],
    )
    if pulls or docs:
        await derive_series(db, {*pulls, *(str(doc["series"]) for doc in docs.values())})
    return len(docs)


async def held(db: AsyncDatabase[Document], until: str, limit: int) -> list[RejectedInstance]:
    """The held rejected instances rejected by ``until``, oldest rejection first."""
    if limit == 0:
        return []
    cursor = (
        db[COLLECTION]
        .find({HELD: {"$exists": True}, "rejected_at": {"$lte": until}})
        .sort([("rejected_at", ASCENDING), ("_id", ASCENDING)])
        .limit(limit)
    )
    return [
        RejectedInstance(
            sop_instance_uid=str(doc["_id"]),
            series_instance_uid=str(doc["series"]),
            study_instance_uid=str(doc["study"]),
            object_key=str(doc[HELD]["object_key"]),
            reason=str(doc["reason"]),
            rejected_at=str(doc["rejected_at"]),
        )
        async for doc in cursor
    ]


async def release(
    db: AsyncDatabase[Document], study: str, series: str, instance: str, until: str
) -> list[str]:
    """Forget the objects of the target's held rejected instances received by ``until``
    (a removal), keeping their rejections; their object keys."""
    query: Document = {"study": study, HELD: {"$exists": True}}
    if series:
        query["series"] = series
    if instance:
        query["_id"] = instance
    docs = [
        doc
        async for doc in db[COLLECTION].find(query)
        if received_by(str(doc[HELD].get("received_at", "")), until)
    ]
    if docs:
        await db[COLLECTION].update_many(
            {"_id": {"$in": [doc["_id"] for doc in docs]}}, {"$unset": {HELD: ""}}
        )
    return [str(doc[HELD]["object_key"]) for doc in docs]


async def located(
    db: AsyncDatabase[Document],
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    sop_instance_uids: Sequence[str],
) -> list[InstanceLocation]:
    """The held rejected instances under the given entities (every non-empty filter)."""
    query: Document = {HELD: {"$exists": True}}
    for field, values in (
        ("study", study_uids),
        ("series", series_uids),
        ("_id", sop_instance_uids),
    ):
        if values:
            query[field] = {"$in": [str(v) for v in values]}
    docs = await db[COLLECTION].find(query).to_list(None)
    docs.sort(key=lambda d: (d["study"], d["series"], d["_id"]))
    return [
        InstanceLocation(
            sop_instance_uid=str(doc["_id"]),
            sop_class_uid=str(doc[HELD]["sop_class"]),
            series_instance_uid=str(doc["series"]),
            study_instance_uid=str(doc["study"]),
            object_key=str(doc[HELD]["object_key"]),
            transfer_syntax_uid=str(doc[HELD].get("transfer_syntax", "")),
            size=int(doc[HELD].get("size", 0)),
        )
        for doc in docs
    ]
