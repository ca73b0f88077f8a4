"""The write path of the MongoDB catalog: idempotent upserts without transactions.

Each parent keeps the keys of its children in an array (series: instance
members as ``"<sop class>|<sop instance uid>"``, studies: series UIDs,
patients: study keys), grown with ``$addToSet`` and shrunk with ``$pullAll``
when a re-sent instance moved to another parent. The computed attributes
(PS3.4 C.6.1.1.2-5) are then derived bottom-up from those arrays, reading
documents by ``_id`` only, so no write ever scans a collection.

Every read goes by ``_id`` (see :func:`by_id`). Replaying a batch, or
finishing one a crash interrupted, gives the same documents. Operations on
one document are merged into one per batch: FerretDB stalls on a bulk write
that updates the same document hundreds of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from micropacs.dicom import levels, matching, tags
from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.dicom.levels import Level
from micropacs.dicom.matching import normal_date, normal_pn
from micropacs.ports import InstanceRecord

Document = dict[str, Any]

# tag -> (field, kind) of the indexed copies kept on each level's documents
PATIENT_FIELDS = {
    tags.PATIENT_ID: ("patient_id", "text"),
    tags.PATIENT_NAME: ("patient_name", "pn"),
    tags.PATIENT_BIRTH_DATE: ("birth_date", "da"),
    tags.PATIENT_SEX: ("sex", "text"),
}
STUDY_FIELDS = {
    **PATIENT_FIELDS,
    tags.STUDY_INSTANCE_UID: ("_id", "uid"),
    tags.STUDY_DATE: ("study_date", "da"),
    tags.ACCESSION_NUMBER: ("accession_number", "text"),
    tags.STUDY_ID: ("study_id", "text"),
    tags.REFERRING_PHYSICIAN_NAME: ("referring_physician", "pn"),
    tags.STUDY_DESCRIPTION: ("study_description", "text"),
    tags.MODALITIES_IN_STUDY: ("modalities", "text"),
}
SERIES_FIELDS = {
    tags.SERIES_INSTANCE_UID: ("_id", "uid"),
    tags.STUDY_INSTANCE_UID: ("study", "uid"),
    tags.MODALITY: ("modality", "text"),
    tags.SERIES_DESCRIPTION: ("series_description", "text"),
    tags.BODY_PART_EXAMINED: ("body_part", "text"),
    tags.SERIES_DATE: ("series_date", "da"),
}
INSTANCE_FIELDS = {
    tags.SOP_INSTANCE_UID: ("_id", "uid"),
    tags.SERIES_INSTANCE_UID: ("series", "uid"),
    tags.STUDY_INSTANCE_UID: ("study", "uid"),
    tags.SOP_CLASS_UID: ("sop_class", "uid"),
}
_NOT_COPIED = ("_id", "study", "series", "modalities")
DUPLICATE_KEY = 11000
PREFIX_KEY_LENGTH = 8
"""The longest folded name prefix kept in a person name's ``<field>_prefixes`` array."""


def prefix_keys(folded: list[str]) -> list[str]:
    """Every prefix of these folded names, 1 to :data:`PREFIX_KEY_LENGTH` characters long.

    A wildcard's literal prefix then narrows by equality on an array, which every
    server serves from an index: FerretDB 1.24 pushes a ``$regex`` down to neither
    backend, but an equality to both.
    """
    return sorted({v[:n] for v in folded for n in range(1, min(len(v), PREFIX_KEY_LENGTH) + 1)})


def date_keys(dates: list[str]) -> list[str]:
    """The year and the month (YYYY, YYYYMM) of these normalized dates: a range within
    one year or one month narrows by equality on the ``<field>_keys`` array."""
    return sorted({d[:n] for d in dates if len(d) == 8 for n in (4, 6)})


def _field_values(element: DicomJson | None, kind: str) -> list[str]:
    values = text_of(element, skip_blank=True)
    if kind == "pn":
        return [normal_pn(v) for v in values]
    if kind == "da":
        return [normal_date(v) for v in values]
    return [v.strip() for v in values]


def _one_or_many(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else (values or None)


def indexed_copies(attrs: DicomJson, fields: dict[str, tuple[str, str]]) -> Document:
    """The indexed copies of ``attrs``: one value, or an array when multi-valued."""
    found: Document = {}
    for tag, (name, kind) in fields.items():
        if name in _NOT_COPIED or tag not in attrs:
            continue  # an object lacking an attribute leaves the entity's copy as it was
        values = _field_values(attrs.get(tag), kind)
        found[name] = _one_or_many(values)
        if kind == "pn":
            folded = [matching.fold(v) for v in values]
            found[f"{name}_fold"] = _one_or_many(folded)
            found[f"{name}_prefixes"] = prefix_keys(folded)
        elif kind == "da":
            found[f"{name}_keys"] = date_keys(values)
    return found


def _attrs(attrs: DicomJson) -> Document:
    return {f"attrs.{tag}": element for tag, element in attrs.items()}


def _number(element: DicomJson | None) -> int | None:
    values = text_of(element)
    try:
        return int(float(values[0])) if values else None
    except ValueError:
        return None


def patient_key(record: InstanceRecord) -> str:
    """The patient's ``_id``: issuer and patient ID together identify a patient."""
    return f"{record.issuer_of_patient_id}|{record.patient_id}"


def member(sop_class_uid: str, sop_instance_uid: str) -> str:
    """How a series lists one of its instances."""
    return f"{sop_class_uid}|{sop_instance_uid}"


@dataclass
class _Merged:
    """The one update of a parent document in this batch."""

    fields: Document = field(default_factory=dict)
    children: list[str] = field(default_factory=list)

    def update(self, child_array: str) -> Document:
        update: Document = {"$set": self.fields}
        if self.children:
            update["$addToSet"] = {child_array: {"$each": sorted(set(self.children))}}
        return update


@dataclass
class _Dirty:
    """Entities whose computed attributes must be derived again."""

    series: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)


async def by_id(
    db: AsyncDatabase[Document],
    collection: str,
    ids: Iterable[str],
    projection: Document | None = None,
) -> dict[str, Document]:
    """The documents with these ``_id``s, each read by its own ``_id`` equality.

    Never ``{"_id": {"$in": …}}``: FerretDB 1.24's SQLite backend pushes down
    only a filter that is exactly one ``_id`` (backends/sqlite/collection.go),
    and scans the whole collection for anything else.
    """
    wanted = sorted(set(ids))
    limit = asyncio.Semaphore(32)

    async def one(uid: str) -> Document | None:
        async with limit:
            return await db[collection].find_one({"_id": uid}, projection)

    docs = await asyncio.gather(*(one(uid) for uid in wanted))
    return {doc["_id"]: doc for doc in docs if doc is not None}


BULK_CHUNK = 16
"""Writes per ``bulk_write``: FerretDB 1.24 on PostgreSQL holds one pooled connection
per statement of an update command until the command ends (handler/msg_update.go
defers each statement's close in its loop), so a command of more statements than its
pool has connections (50) never ends, and takes the server down with it."""


async def bulk(db: AsyncDatabase[Document], collection: str, ops: Sequence[Any]) -> None:
    """Apply ``ops`` unordered, :data:`BULK_CHUNK` at a time."""
    for start in range(0, len(ops), BULK_CHUNK):
        await db[collection].bulk_write(list(ops[start : start + BULK_CHUNK]), ordered=False)


async def upsert(db: AsyncDatabase[Document], records: Sequence[InstanceRecord]) -> None:
    """Upsert ``records`` and everything above them, then derive the computed attributes."""
    latest = {r.sop_instance_uid: r for r in records}  # a re-sent instance: the last wins
    batch = list(latest.values())
    dirty = _Dirty()

    instances: dict[str, Document] = {}
    series: dict[str, _Merged] = {}
    studies: dict[str, _Merged] = {}
    patients: dict[str, _Merged] = {}
    for record in batch:
        parts = levels.split_by_level(record.header)
        key = patient_key(record)
        patient = parts[Level.PATIENT]
        image = parts[Level.IMAGE]
        instances[record.sop_instance_uid] = {
            "attrs": image,
            "series": record.series_instance_uid,
            "study": record.study_instance_uid,
            "patient_key": key,
            "sop_class": record.sop_class_uid,
            "object_key": record.object_key,
            "transfer_syntax": record.transfer_syntax_uid,
            "original_transfer_syntax": record.original_transfer_syntax_uid,
            "sha256": record.sha256,
            "size": record.size,
            "storage_group": record.storage_group,
            "received_at": record.received_at,
            "instance_number": _number(image.get(tags.INSTANCE_NUMBER)),
        }
        one_series = series.setdefault(record.series_instance_uid, _Merged())
        one_series.fields.update(
            _attrs(parts[Level.SERIES]),
            **indexed_copies(parts[Level.SERIES], SERIES_FIELDS),
            study=record.study_instance_uid,
            patient_key=key,
        )
        one_series.children.append(member(record.sop_class_uid, record.sop_instance_uid))
        studies.setdefault(record.study_instance_uid, _Merged()).fields.update(
            _attrs(parts[Level.STUDY]),
            **indexed_copies({**patient, **parts[Level.STUDY]}, STUDY_FIELDS),
            patient_key=key,
        )
        patients.setdefault(key, _Merged()).fields.update(
            _attrs(patient),
            **indexed_copies(patient, PATIENT_FIELDS),
            issuer=record.issuer_of_patient_id,
        )
    # A series (study) belongs to the study (patient) of its latest record only.
    for uid, one in series.items():
        studies[one.fields["study"]].children.append(uid)
    for uid, one in studies.items():
        patients[one.fields["patient_key"]].children.append(uid)
    studies = {uid: one for uid, one in studies.items() if one.children}
    patients = {key: one for key, one in patients.items() if one.children}
    # New instances go in with one insert (20 times faster than upserts on FerretDB);
    # only the re-sent ones are read, to pull them from parents they may have left.
    again = await _insert_new(db, instances)
    before = await by_id(db, "instances", again, {"series": 1, "sop_class": 1})
    await _detach_moved(db, batch, before, series, studies, dirty)

    # Children before parents: a reader never finds a parent listing a missing child.
    await bulk(
        db,
        "instances",
        [UpdateOne({"_id": uid}, {"$set": instances[uid]}, upsert=True) for uid in again],
    )
    await bulk(db, "series", _upserts(series, "members"))
    await bulk(db, "studies", _upserts(studies, "series_members"))
    await bulk(db, "patients", _upserts(patients, "study_members"))
    dirty.series.update(series)
    dirty.studies.update(studies)
    dirty.patients.update(patients)
    await _derive_computed(db, dirty)


async def _insert_new(db: AsyncDatabase[Document], instances: dict[str, Document]) -> list[str]:
    """Insert the instances not yet in the catalog; returns the ones that were."""
    try:
        await db.instances.insert_many(
            [{"_id": uid, **doc} for uid, doc in instances.items()], ordered=False
        )
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        uids = list(instances)
        return [uids[error["index"]] for error in errors]
    return []


def _upserts(merged: dict[str, _Merged], child_array: str) -> list[UpdateOne]:
    return [
        UpdateOne({"_id": uid}, one.update(child_array), upsert=True) for uid, one in merged.items()
    ]


async def _detach_moved(
    db: AsyncDatabase[Document],
    batch: list[InstanceRecord],
    before: dict[str, Document],
    series: dict[str, _Merged],
    studies: dict[str, _Merged],
    dirty: _Dirty,
) -> None:
    """Pull re-sent entities out of the parents they no longer belong to."""
    series_before = await by_id(db, "series", series, {"study": 1})
    studies_before = await by_id(db, "studies", studies, {"patient_key": 1})
    pulls: dict[str, dict[str, set[str]]] = {"series": {}, "studies": {}, "patients": {}}
    for record in batch:
        old = before.get(record.sop_instance_uid)
        now = (record.series_instance_uid, record.sop_class_uid)
        if old and (old["series"], old["sop_class"]) != now:
            pulls["series"].setdefault(old["series"], set()).add(
                member(old["sop_class"], record.sop_instance_uid)
            )
            dirty.series.add(old["series"])
    for uid, old in series_before.items():
        if old.get("study") != series[uid].fields["study"]:
            pulls["studies"].setdefault(old["study"], set()).add(uid)
            dirty.studies.add(old["study"])
    for uid, old in studies_before.items():
        if old.get("patient_key") != studies[uid].fields["patient_key"]:
            pulls["patients"].setdefault(old["patient_key"], set()).add(uid)
            dirty.patients.add(old["patient_key"])
    arrays = {"series": "members", "studies": "series_members", "patients": "study_members"}
    for collection, by_parent in pulls.items():
        await bulk(
            db,
            collection,
            [
                UpdateOne({"_id": parent}, {"$pullAll": {arrays[collection]: sorted(gone)}})
                for parent, gone in by_parent.items()
            ],
        )


async def _derive_computed(db: AsyncDatabase[Document], dirty: _Dirty) -> None:
    """Derive the computed attributes bottom-up; delete entities left without children."""
    series_docs = await by_id(db, "series", dirty.series, {"members": 1, "study": 1})
    series_ops: list[Any] = []
    emptied_series: dict[str, set[str]] = {}
    for uid, doc in series_docs.items():
        dirty.studies.add(doc.get("study", ""))
        members = doc.get("members", [])
        if not members:
            series_ops.append(DeleteOne({"_id": uid}))
            emptied_series.setdefault(doc.get("study", ""), set()).add(uid)
            continue
        classes = sorted({m.split("|", 1)[0] for m in members})
        series_ops.append(
            UpdateOne({"_id": uid}, {"$set": {"n_instances": len(members), "sop_classes": classes}})
        )
    await bulk(db, "series", series_ops)
    await _pull_children(db, "studies", "series_members", emptied_series)

    studies = await by_id(db, "studies", dirty.studies, {"series_members": 1, "patient_key": 1})
    children = await by_id(
        db,
        "series",
        (uid for doc in studies.values() for uid in doc.get("series_members", [])),
        {"n_instances": 1, "modality": 1, "sop_classes": 1},
    )
    study_ops: list[Any] = []
    emptied_studies: dict[str, set[str]] = {}
    for uid, doc in studies.items():
        dirty.patients.add(doc.get("patient_key", ""))
        present = [children[s] for s in doc.get("series_members", []) if s in children]
        if not present:
            study_ops.append(DeleteOne({"_id": uid}))
            emptied_studies.setdefault(doc.get("patient_key", ""), set()).add(uid)
            continue
        study_ops.append(
            UpdateOne(
                {"_id": uid},
                {
                    "$set": {
                        "n_series": len(present),
                        "n_instances": sum(s.get("n_instances", 0) for s in present),
                        "modalities": sorted(
                            {m for s in present for m in listed(s.get("modality"))}
                        ),
                        "sop_classes": sorted(
                            {c for s in present for c in s.get("sop_classes", [])}
                        ),
                    }
                },
            )
        )
    await bulk(db, "studies", study_ops)
    await _pull_children(db, "patients", "study_members", emptied_studies)

    patients = await by_id(db, "patients", dirty.patients, {"study_members": 1})
    their_studies = await by_id(
        db,
        "studies",
        (uid for doc in patients.values() for uid in doc.get("study_members", [])),
        {"n_series": 1, "n_instances": 1},
    )
    patient_ops: list[Any] = []
    for key, doc in patients.items():
        present = [their_studies[s] for s in doc.get("study_members", []) if s in their_studies]
        if not present:
            patient_ops.append(DeleteOne({"_id": key}))
            continue
        patient_ops.append(
            UpdateOne(
                {"_id": key},
                {
                    "$set": {
                        "n_studies": len(present),
                        "n_series": sum(s.get("n_series", 0) for s in present),
                        "n_instances": sum(s.get("n_instances", 0) for s in present),
                    }
                },
            )
        )
    await bulk(db, "patients", patient_ops)


async def derive_computed(db: AsyncDatabase[Document], patients: Iterable[str]) -> None:
    """Derive the computed attributes of these patients again (after a merge)."""
    await _derive_computed(db, _Dirty(patients=set(patients)))


async def derive_series(db: AsyncDatabase[Document], series: Iterable[str]) -> None:
    """Derive the computed attributes of these series and above again (after a removal),
    deleting those left empty."""
    await _derive_computed(db, _Dirty(series=set(series)))


def listed(value: Any) -> list[str]:
    """An indexed copy (absent, one value or several) as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


async def _pull_children(
    db: AsyncDatabase[Document], collection: str, array: str, gone: dict[str, set[str]]
) -> None:
    await bulk(
        db,
        collection,
        [
            UpdateOne({"_id": parent}, {"$pullAll": {array: sorted(children)}})
            for parent, children in gone.items()
            if parent
        ],
    )
