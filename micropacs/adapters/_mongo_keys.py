"""The key arrays of documents the MongoDB catalog wrote before it kept them.

``<field>_prefixes`` (a person name's folded prefixes) and ``<field>_keys`` (a
date's year and month) narrow queries by equality (see
:func:`micropacs.adapters.mongo._narrowing`), so a document lacking them would
be missed by a wildcard or a range. Opening the catalog derives them once from
the indexed copies already there, then records that it did, so later opens
read one document by ``_id``.
"""

from __future__ import annotations

from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from micropacs.adapters._mongo_write import (
    PATIENT_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    bulk,
    date_keys,
    listed,
    prefix_keys,
)

META = "catalog_meta"
MARK = "key_arrays"
VERSION = 1
BATCH = 500


def _keys_of(doc: dict[str, Any], fields: list[tuple[str, str]]) -> dict[str, Any]:
    update: dict[str, Any] = {}
    for name, kind in fields:
        if name not in doc:
            continue  # an entity without the attribute: no copy, so no key array either
        if kind == "pn":
            update[f"{name}_prefixes"] = prefix_keys(listed(doc.get(f"{name}_fold")))
        else:
            update[f"{name}_keys"] = date_keys(listed(doc[name]))
    return update


async def backfill_keys(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Derive the key arrays of every patient, study and series once (idempotent)."""
    if await db[META].find_one({"_id": MARK, "version": VERSION}, {"_id": 1}) is not None:
        return
    for collection, by_tag in (
        ("patients", PATIENT_FIELDS),
        ("studies", STUDY_FIELDS),
        ("series", SERIES_FIELDS),
    ):
        fields = [(name, kind) for name, kind in by_tag.values() if kind in ("pn", "da")]
        projection = {name: 1 for name, _ in fields} | {f"{n}_fold": 1 for n, _ in fields}
        ops: list[UpdateOne] = []
        async for doc in db[collection].find({}, projection):
            update = _keys_of(doc, fields)
            if update:
                ops.append(UpdateOne({"_id": doc["_id"]}, {"$set": update}))
            if len(ops) == BATCH:
                await bulk(db, collection, ops)
                ops = []
        await bulk(db, collection, ops)
    await db[META].replace_one({"_id": MARK}, {"version": VERSION}, upsert=True)
