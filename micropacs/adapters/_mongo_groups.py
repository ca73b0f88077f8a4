"""Storage groups in the MongoDB catalog (private; retention and tiering, docs/lifecycle.md).

A study's instances switch to their new keys all at once without a transaction (the
catalog uses none, for FerretDB): each instance document first gets the new place
beside the old one (``move``: an id, the new key and group, and the old key and receive
time it applies to), then the study document names that id (``moving``): that one
write is the switch, since :func:`switched` (which ``locate`` applies) answers an
instance's new key exactly while its study names its move and its record is still the
one the move was made for. Then the new places are written into the instances and the
study's ``moving`` is dropped. A crash before the study's write leaves every old key
(the next move overwrites the stale ``move`` fields), one after it every new key; the
next call for the study, or the next :func:`studies` of any group, finishes it.

A move of a study then reads and writes its instances by ``_id`` (FerretDB's SQLite
backend reads a whole collection for any other filter); where the server answers other
equalities from its indexes too (``pushed_down``), each write also asks that the record
still be the one read, so an instance stored again in the meantime keeps its record.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from micropacs.adapters._mongo_write import BULK_CHUNK
from micropacs.ports import InstanceMove, StoredInstance, StudyInGroup

Document = dict[str, Any]
MOVE = "move"
"""The field of an instance document holding its new place while its study is moved."""
MOVING = "moving"
"""The field of a study document naming the move being switched (the switch itself)."""

NOT_IMPLEMENTED = 238
"""The server's error code of an operation it does not implement (FerretDB's ``$max``)."""

InstancesOf = Callable[[str], Awaitable[list[Document]]]
"""The instance documents of a study (read through its series, by ``_id``)."""


def _applies(doc: Document, move: Any) -> bool:
    return (
        isinstance(move, dict)
        and doc.get("object_key") == move.get("from_key")
        and doc.get("received_at") == move.get("received_at")
    )


def switched(doc: Document, study: Document | None) -> Document:
    """The instance document as readers see it: at its new key once its study's move is
    switched and while its record is the one moved, else as stored."""
    move = doc.get(MOVE)
    if study is None or not move or study.get(MOVING) != move.get("id"):
        return doc
    if not _applies(doc, move):
        return doc
    return {**doc, "object_key": move["object_key"], "storage_group": move["storage_group"]}


def stored(docs: Sequence[Document]) -> list[StoredInstance]:
    """Instance documents (as :func:`switched` shows them) as stored instances."""
    found = [
        StoredInstance(
            sop_instance_uid=str(d["_id"]),
            series_instance_uid=str(d["series"]),
            study_instance_uid=str(d["study"]),
            storage_group=str(d.get("storage_group", "")),
            object_key=str(d["object_key"]),
            size=int(d.get("size", 0)),
            received_at=str(d.get("received_at", "")),
            sha256=str(d.get("sha256", "")),
        )
        for d in docs
    ]
    return sorted(found, key=lambda s: (s.series_instance_uid, s.sop_instance_uid))


async def _write(db: AsyncDatabase[Document], ops: list[UpdateOne]) -> int:
    """Apply ``ops`` unordered in chunks (FerretDB's limit, :data:`BULK_CHUNK`); how many
    documents they changed."""
    changed = 0
    for start in range(0, len(ops), BULK_CHUNK):
        result = await db.instances.bulk_write(ops[start : start + BULK_CHUNK], ordered=False)
        changed += result.modified_count
    return changed


def _still(doc: Document, pushed_down: bool, **extra: Any) -> Document:
    """The filter of a write to ``doc``: its ``_id``, and that its record is unchanged
    where the server can check that from its indexes."""
    if not pushed_down:
        return {"_id": doc["_id"]}
    return {
        "_id": doc["_id"],
        "object_key": doc["object_key"],
        "received_at": doc.get("received_at"),
        **extra,
    }


async def finish(
    db: AsyncDatabase[Document], study_uid: str, instances_of: InstancesOf, pushed_down: bool
) -> int:
    """Write a switched move of the study into its instances and end it; how many
    instances took their new place (0 when none was switched)."""
    study = await db.studies.find_one({"_id": study_uid}, {MOVING: 1})
    move_id = None if study is None else study.get(MOVING)
    if move_id is None:
        return 0
    ops = []
    for doc in await instances_of(study_uid):
        move = doc.get(MOVE)
        if not isinstance(move, dict) or move.get("id") != move_id:
            continue
        if _applies(doc, move):
            update = {
                "$set": {"object_key": move["object_key"], "storage_group": move["storage_group"]},
                "$unset": {MOVE: ""},
            }
            ops.append(UpdateOne(_still(doc, pushed_down), update))
        else:
            ops.append(UpdateOne({"_id": doc["_id"]}, {"$unset": {MOVE: ""}}))
    moved = await _write(db, ops) if ops else 0
    await db.studies.update_one({"_id": study_uid, MOVING: move_id}, {"$unset": {MOVING: ""}})
    return moved


async def move(
    db: AsyncDatabase[Document],
    study_uid: str,
    moves: dict[str, InstanceMove],
    instances_of: InstancesOf,
    pushed_down: bool,
) -> int:
    """Move the study's instances as the module says; how many moved."""
    await finish(db, study_uid, instances_of, pushed_down)  # one a crash left switched
    move_id = uuid.uuid4().hex
    ops = []
    for doc in await instances_of(study_uid):
        wanted = moves.get(str(doc["_id"]))
        if wanted is None or doc.get("study") != study_uid:
            continue
        if doc.get("object_key") != wanted.from_key or doc.get("received_at") != wanted.received_at:
            continue  # stored again since it was read: it keeps its record
        if wanted.object_key == wanted.from_key:
            continue
        place = {
            "id": move_id,
            "object_key": wanted.object_key,
            "storage_group": wanted.storage_group,
            "from_key": wanted.from_key,
            "received_at": wanted.received_at,
        }
        ops.append(UpdateOne(_still(doc, pushed_down), {"$set": {MOVE: place}}))
    if not ops:
        return 0
    if not await _write(db, ops):
        return 0
    await db.studies.update_one({"_id": study_uid}, {"$set": {MOVING: move_id}})  # the switch
    return await finish(db, study_uid, instances_of, pushed_down)


async def finish_all(
    db: AsyncDatabase[Document], instances_of: InstancesOf, pushed_down: bool
) -> None:
    """Finish every study's switched move (a crash's leftovers)."""
    async for study in db.studies.find({MOVING: {"$exists": True}}, {"_id": 1}):
        await finish(db, str(study["_id"]), instances_of, pushed_down)


async def studies(
    db: AsyncDatabase[Document],
    storage_group: str,
    received_before: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[StudyInGroup]:
    """A page of the group's studies, least recently received first, ordered and cut here."""
    try:
        sums = await _summed(db, storage_group)
    except OperationFailure as exc:
        if exc.code != NOT_IMPLEMENTED:
            raise
        sums = await _summed_here(db, storage_group)
    page = []
    for study_uid, found in sums.items():
        last = str(found.get("last", ""))
        if received_before is not None and not last < received_before:
            continue
        if after is not None and not (last, study_uid) > after:
            continue
        page.append(
            StudyInGroup(
                study_uid,
                storage_group,
                int(found.get("instances", 0)),
                int(found.get("bytes", 0)),
                last,
            )
        )
    page.sort(key=lambda s: (s.last_received, s.study_instance_uid))
    return page[:limit]


async def _summed(db: AsyncDatabase[Document], storage_group: str) -> dict[str, Document]:
    """Per study of the group: its newest receive time, instances and bytes, summed by the
    server (one accumulator per ``$group``: FerretDB answers 0 for any but the first)."""
    sums: dict[str, Document] = {}
    for name, accumulator in (
        ("last", {"$max": "$received_at"}),
        ("instances", {"$sum": 1}),
        ("bytes", {"$sum": "$size"}),
    ):
        cursor = await db.instances.aggregate(
            [
                {"$match": {"storage_group": storage_group}},
                {"$group": {"_id": "$study", name: accumulator}},
            ]
        )
        for found in await cursor.to_list(None):
            sums.setdefault(str(found["_id"]), {})[name] = found[name]
    return sums


async def _summed_here(db: AsyncDatabase[Document], storage_group: str) -> dict[str, Document]:
    """The same, summed here from the group's instances (three small fields each): for
    FerretDB 1, which has no ``$max``."""
    sums: dict[str, Document] = {}
    projection = {"study": 1, "size": 1, "received_at": 1}
    async for doc in db.instances.find({"storage_group": storage_group}, projection):
        found = sums.setdefault(str(doc["study"]), {"last": "", "instances": 0, "bytes": 0})
        found["last"] = max(found["last"], str(doc.get("received_at", "")))
        found["instances"] += 1
        found["bytes"] += int(doc.get("size", 0))
    return sums
