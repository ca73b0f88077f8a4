"""Patient updates and merges in the MongoDB catalog (private).

The ``patient_updates`` collection holds, by patient key (``issuer|id``), the
RIS's demographics (``attrs``) and, once merged, the survivor's key
(``merged_into``). Without transactions each step is an idempotent upsert and
the steps are ordered so that replaying an event after a crash finishes it:
the record of the change first, then the patient, study, series and instance
documents, then the computed attributes.

An update or merge racing a batch of instances of the same patient (they come
on different topics) is settled by :func:`upsert`'s second look: a batch that
finds a record it did not file by applies it again after its writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from micropacs.adapters._mongo_write import (
    PATIENT_FIELDS,
    bulk,
    by_id,
    derive_computed,
    indexed_copies,
    patient_key,
)
from micropacs.adapters._patients import filed_under, patient_attributes, with_identity
from micropacs.dicom.json_model import DicomJson
from micropacs.ports import InstanceRecord

Document = dict[str, Any]


def identity_of(key: str) -> tuple[str, str]:
    """PatientID and IssuerOfPatientID of a patient key."""
    issuer, _, patient_id = key.partition("|")
    return patient_id, issuer


async def resolve(
    db: AsyncDatabase[Document], keys: set[str]
) -> dict[str, tuple[str, DicomJson, bool]]:
    """For each key the RIS changed: the key it is filed under, that patient's RIS
    attributes, and whether it is a survivor the catalog holds."""
    found = await by_id(db, "patient_updates", keys)
    if not found:
        return {}
    targets = {doc["merged_into"] for doc in found.values() if doc.get("merged_into")}
    survivors = await by_id(db, "patient_updates", targets)
    held = await by_id(db, "patients", targets, {"_id": 1})
    resolved: dict[str, tuple[str, DicomJson, bool]] = {}
    for key, doc in found.items():
        target = doc.get("merged_into") or ""
        if not target:
            resolved[key] = (key, doc.get("attrs", {}), False)
        else:
            attrs = survivors.get(target, {}).get("attrs", {})
            resolved[key] = (target, attrs, target in held)
    return resolved


def file_records(
    records: Sequence[InstanceRecord], resolved: dict[str, tuple[str, DicomJson, bool]]
) -> list[InstanceRecord]:
    """``records`` filed as the RIS's changes say (see :func:`filed_under`)."""
    filed = []
    for record in records:
        found = resolved.get(patient_key(record))
        if found is None:
            filed.append(record)
            continue
        target, attrs, merged = found
        filed.append(filed_under(record, *identity_of(target), attrs, merged=merged))
    return filed


async def update(db: AsyncDatabase[Document], key: str, attributes: DicomJson) -> int:
    """Record the RIS's demographics of ``key`` and apply them; studies changed."""
    attrs = with_identity(patient_attributes(attributes), *identity_of(key))
    record = await db.patient_updates.find_one_and_update(
        {"_id": key},
        # An update names only what changed (HL7 v2: an absent field is no change).
        {
            "$set": {f"attrs.{tag}": value for tag, value in attrs.items()},
            "$setOnInsert": {"merged_into": ""},
        },
        upsert=True,
        return_document=True,
    )
    if record is not None and record.get("merged_into"):
        return 0
    return await apply(db, key)


async def apply(db: AsyncDatabase[Document], key: str) -> int:
    """Write the recorded RIS attributes of ``key`` into its patient and the copies its
    studies keep; studies changed."""
    record = await db.patient_updates.find_one({"_id": key})
    patient = await db.patients.find_one({"_id": key}, {"attrs": 1, "study_members": 1})
    if record is None or patient is None:
        return 0
    attrs = {**patient.get("attrs", {}), **record.get("attrs", {})}
    copies = indexed_copies(attrs, PATIENT_FIELDS)
    await db.patients.update_one({"_id": key}, {"$set": {"attrs": attrs, **copies}})
    studies = list(patient.get("study_members", []))
    if studies:
        await bulk(db, "studies", [UpdateOne({"_id": uid}, {"$set": copies}) for uid in studies])
    return len(studies)


async def merge(db: AsyncDatabase[Document], prior: str, survivor: str) -> int:
    """Merge ``prior`` into ``survivor``; studies moved."""
    if prior == survivor:
        return 0
    await db.patient_updates.update_one(
        {"_id": survivor},
        {
            "$set": {"merged_into": ""},
            "$setOnInsert": {"attrs": with_identity({}, *identity_of(survivor))},
        },
        upsert=True,
    )
    await db.patient_updates.update_one(
        {"_id": prior},
        {
            "$set": {"merged_into": survivor},
            "$setOnInsert": {"attrs": with_identity({}, *identity_of(prior))},
        },
        upsert=True,
    )
    await db.patient_updates.update_many(
        {"merged_into": prior}, {"$set": {"merged_into": survivor}}
    )
    old = await db.patients.find_one({"_id": prior})
    moved = {doc["_id"] async for doc in db.studies.find({"patient_key": prior}, {"_id": 1})}
    if old is not None:
        moved.update(old.get("study_members", []))
    if moved:
        # The survivor lists the studies before they name it: a reader never finds a
        # study whose patient does not list it.
        known = await db.patient_updates.find_one({"_id": survivor})
        attrs = with_identity(
            {**(old or {}).get("attrs", {}), **(known or {}).get("attrs", {})},
            *identity_of(survivor),
        )
        await _adopt(db, survivor, attrs, sorted(moved))
        for collection in ("instances", "series", "studies"):
            await db[collection].update_many(
                {"patient_key": prior}, {"$set": {"patient_key": survivor}}
            )
        await apply(db, survivor)
    await db.patients.delete_one({"_id": prior})
    # Also on a replay: a crash may have come before the survivor's numbers were derived.
    await derive_computed(db, {survivor})
    return len(moved) if old is not None else 0


async def _adopt(
    db: AsyncDatabase[Document], survivor: str, attrs: DicomJson, studies: list[str]
) -> None:
    """Give the survivor the moved studies, creating it with ``attrs`` if it is new."""
    issuer = identity_of(survivor)[1]
    await db.patients.update_one(
        {"_id": survivor},
        {
            "$setOnInsert": {
                "attrs": attrs,
                "issuer": issuer,
                **indexed_copies(attrs, PATIENT_FIELDS),
            },
            "$addToSet": {"study_members": {"$each": studies}},
        },
        upsert=True,
    )
