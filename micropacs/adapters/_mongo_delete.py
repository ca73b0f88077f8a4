"""Removing instances from the MongoDB catalog (private), without transactions.

MongoDB (as FerretDB) has no transaction here, so a removal is made atomic to
readers instead: the study (or series) is first marked ``hidden`` in one write,
which every query and locate skips; then its instances are deleted, pulled from
their series and the computed attributes derived again, which deletes the
series, study and patient left empty; an entity still holding newer instances
is shown again last. A crash in between leaves the target hidden, never half
answered, and the redelivered event finishes the removal. One instance is
deleted with one write, then pulled from its series.
"""

from __future__ import annotations

from typing import Any

from pymongo import DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from micropacs.adapters._mongo_write import bulk, by_id, derive_series, member
from micropacs.adapters._received import received_by

Document = dict[str, Any]

HIDDEN = "hidden"
"""The field that marks a study or series being removed: queries and locate skip it."""


def _uid(member_key: str) -> str:
    return member_key.split("|", 1)[1]


async def remove(
    db: AsyncDatabase[Document], study: str, series: str, instance: str, until: str
) -> list[str]:
    """Remove the target's instances received by ``until``; their object keys."""
    if series:
        series_uids = [series]
    else:
        found = await by_id(db, "studies", [study], {"series_members": 1})
        series_uids = list(found.get(study, {}).get("series_members", []))
    series_docs = await by_id(db, "series", series_uids, {"members": 1, "study": 1})
    members = {
        uid: list(doc.get("members", []))
        for uid, doc in series_docs.items()
        if doc.get("study") == study
    }
    wanted = [instance] if instance else [_uid(m) for listed in members.values() for m in listed]
    docs = await by_id(db, "instances", wanted)
    removed = [
        doc
        for doc in docs.values()
        if doc.get("study") == study
        and (not series or doc.get("series") == series)
        and received_by(str(doc.get("received_at", "")), until)
    ]
    # Members whose instance is already gone (a crash before their pull) go too.
    kept = {doc["_id"] for doc in docs.values()} - {doc["_id"] for doc in removed}
    pulls: dict[str, set[str]] = {}
    for uid, listed in members.items():
        gone = {m for m in listed if (not instance or _uid(m) == instance) and _uid(m) not in kept}
        if gone:
            pulls[uid] = gone
    for doc in removed:
        pulls.setdefault(doc["series"], set()).add(member(doc["sop_class"], doc["_id"]))
    emptied = [uid for uid, listed in members.items() if not listed]  # a crash before derive
    hide = None if instance else ("series", series) if series else ("studies", study)
    if not pulls and not emptied:
        if hide is not None:  # a crash after the derive: show what newer instances kept
            await db[hide[0]].update_one({"_id": hide[1]}, {"$unset": {HIDDEN: ""}})
        return []
    if hide is not None:
        await db[hide[0]].update_one({"_id": hide[1]}, {"$set": {HIDDEN: True}})
    await bulk(db, "instances", [DeleteOne({"_id": doc["_id"]}) for doc in removed])
    await bulk(
        db,
        "series",
        [
            UpdateOne({"_id": uid}, {"$pullAll": {"members": sorted(gone)}})
            for uid, gone in pulls.items()
        ],
    )
    await derive_series(db, {*pulls, *emptied})
    if hide is not None:  # what newer instances kept is answered again
        await db[hide[0]].update_one({"_id": hide[1]}, {"$unset": {HIDDEN: ""}})
    return [str(doc["object_key"]) for doc in removed]
