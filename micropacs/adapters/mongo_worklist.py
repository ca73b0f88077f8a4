"""The distributed Worklist: MongoDB (or FerretDB) collections in the catalog's database.

``worklist_items`` (one document per scheduled step, ``_id`` its item id),
``performed_steps`` (``_id`` the MPPS SOP Instance UID) and ``ris_patients``
(``_id`` "issuer|id"), each holding its entity's DICOM JSON (PS3.18 F.2) in
``attrs`` beside the indexed keys of :mod:`micropacs.adapters._worklist_keys`
(Scheduled Station AE Titles as an array). Only what MongoDB >= 6 and FerretDB
1.24 both do: single-document replaces, indexed finds and sorts.

A query (PS3.4 K.6.1.2, C.2.2.2) filters on the indexed fields as the
catalog does (exact values, date ranges, and for wildcards only an escaped,
anchored literal prefix: the server never runs a backtracking pattern; the
stations' equality at the top level, where FerretDB 1.24 pushes it down), then
:class:`~micropacs.dicom.matching.Matcher` decides on each candidate.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import PyMongoError

from micropacs.adapters._mongo_checks import MonitorChecks
from micropacs.adapters._worklist_keys import (
    FOLDED,
    KEYS,
    STATIONS,
    conditions_of,
    stations_of,
    values_of,
)
from micropacs.adapters.mongo import _condition_filter, flat_filter
from micropacs.dicom import matching
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.errors import CatalogUnavailable, InvalidInput
from micropacs.events import patient_key
from micropacs.ports import PatientDemographics, PerformedStep, WorklistItem
from micropacs.redact import safe_url

ITEMS = "worklist_items"
STEPS = "performed_steps"
PATIENTS = "ris_patients"
ORDER = [("start_date", ASCENDING), ("start_time", ASCENDING), ("_id", ASCENDING)]
"""Scheduled start first, then the item id, so equal starts keep one order."""

INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    ITEMS: [
        *([(key.name, ASCENDING)] for key in KEYS if key.kind not in ("da", "time")),
        *([(f"{name}_fold", ASCENDING)] for name in FOLDED),
        [(STATIONS.name, ASCENDING)],
        ORDER,
    ],
    STEPS: [[("status", ASCENDING), ("updated_at", ASCENDING)], [("updated_at", ASCENDING)]],
    PATIENTS: [[("merged_into", ASCENDING)]],
}


def item_filter(
    identifier: DicomJson, case_insensitive_pn: bool, unfinished_only: bool = False
) -> dict[str, Any]:
    """The Mongo filter of an identifier's candidate items (never drops a true match)."""
    clauses: list[dict[str, Any]] = []
    if unfinished_only:
        # $nin also lets through a missing or null (several values) status.
        clauses.append({"status": {"$nin": sorted(wl.FINISHED_STATUSES)}})
    for key, condition in conditions_of(identifier):
        kind = "uid" if key.kind == "ui" else key.kind
        clause = _condition_filter(key.name, kind, condition, case_insensitive_pn)
        if clause is None:
            continue
        if key is not STATIONS:
            # null: the attribute holds several values, which matching alone can decide.
            field = next(iter(clause))
            clause = {"$or": [clause, {field: None}]}
        clauses.append(clause)
    return flat_filter(clauses)


def _item_document(item: WorklistItem) -> dict[str, Any]:
    if not item.item_id or len(item.item_id) > 128:
        raise InvalidInput("a worklist item's id has 1 to 128 characters")
    if not isinstance(item.dataset, dict):
        raise InvalidInput("a worklist item is a DICOM JSON object")
    return {
        **values_of(item.dataset),
        STATIONS.name: stations_of(item.dataset),
        "attrs": item.dataset,
        "updated_at": item.updated_at,
    }


def _item_of(doc: dict[str, Any]) -> WorklistItem:
    return WorklistItem(doc["_id"], doc["attrs"], doc.get("updated_at", ""))


def _step_of(doc: dict[str, Any]) -> PerformedStep:
    return PerformedStep(
        doc["_id"], doc["attrs"], doc["calling_ae"], doc["created_at"], doc["updated_at"]
    )


class MongoWorklist:
    """The Worklist on MongoDB or FerretDB, at ``mongodb://HOST:PORT/DATABASE``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        name = parts.path.strip("/")
        if parts.scheme != "mongodb" or not name or not re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name):
            raise InvalidInput(f"{safe_url(url)!r} is not mongodb://HOST:PORT/DATABASE")
        self._host = parts.netloc.rpartition("@")[2]
        self._checks = MonitorChecks()
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            tz_aware=True,
            event_listeners=[self._checks],
        )
        self._db = self._client[name]

    def _unavailable(self, exc: Exception) -> CatalogUnavailable:
        return CatalogUnavailable(
            f"worklist at {self._host} failed: {exc}; check that MongoDB (or FerretDB) runs"
            " and that the URL is right"
        )

    async def open(self) -> None:
        """Create the indexes (idempotent)."""
        try:
            for collection, indexes in INDEXES.items():
                for index in indexes:
                    await self._db[collection].create_index(index)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def _replace(self, collection: str, key: str, document: dict[str, Any]) -> None:
        try:
            await self._db[collection].replace_one({"_id": key}, document, upsert=True)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def _get(self, collection: str, key: str) -> dict[str, Any] | None:
        try:
            return await self._db[collection].find_one({"_id": key})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    # -- scheduled procedure steps ------------------------------------------------------------

    async def put_item(self, item: WorklistItem) -> None:
        """Add or replace the item of that ``item_id``; idempotent."""
        await self._replace(ITEMS, item.item_id, _item_document(item))

    async def item(self, item_id: str) -> WorklistItem | None:
        """The item of that id, or None."""
        doc = await self._get(ITEMS, item_id)
        return None if doc is None else _item_of(doc)

    async def remove_item(self, item_id: str) -> bool:
        """Remove an item; False if it was not there."""
        try:
            result = await self._db[ITEMS].delete_one({"_id": item_id})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return bool(result.deleted_count)

    async def set_item_status(self, item_id: str, status: str) -> bool:
        """Set the ScheduledProcedureStepStatus of an item; False if it is not there.

        A read and a replace: the index applies one item's events in order (its
        key is the item id), so no other writer changes the item in between.
        """
        found = await self.item(item_id)
        if found is None:
            return False
        dataset = wl.with_status(found.dataset, status)
        await self.put_item(WorklistItem(item_id, dataset, found.updated_at))
        return True

    async def find_items(
        self,
        identifier: DicomJson,
        *,
        limit: int = 0,
        case_insensitive_pn: bool = False,
        unfinished_only: bool = False,
        max_examined: int = 0,
    ) -> AsyncGenerator[WorklistItem, None]:
        """Every item matching the identifier (PS3.4 K.6.1.2, C.2.2.2), by scheduled start;
        the finished ones left out by the server with ``unfinished_only``."""
        if limit < 0 or max_examined < 0:
            raise InvalidInput("a query's limit and max_examined cannot be negative")
        matcher = matching.Matcher(identifier, case_insensitive_pn=case_insensitive_pn)
        budget = matching.Budget(max_examined)
        produced = 0
        try:
            cursor = self._db[ITEMS].find(
                item_filter(identifier, case_insensitive_pn, unfinished_only)
            )
            async for doc in cursor.sort(ORDER):
                dataset = doc["attrs"]
                if not matcher(dataset) or (unfinished_only and wl.is_finished(dataset)):
                    budget.spend()
                    continue
                yield _item_of(doc)
                produced += 1
                if produced == limit:
                    break
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    # -- performed procedure steps ------------------------------------------------------------

    async def put_step(self, step: PerformedStep) -> None:
        """Add or replace the performed step of that SOP Instance UID; idempotent."""
        if not isinstance(step.dataset, dict):
            raise InvalidInput("a performed procedure step is a DICOM JSON object")
        document = {
            "status": first_text(step.dataset, wl.PERFORMED_STEP_STATUS).strip(),
            "calling_ae": step.calling_ae,
            "created_at": step.created_at,
            "updated_at": step.updated_at,
            "attrs": step.dataset,
        }
        await self._replace(STEPS, step.sop_instance_uid, document)

    async def step(self, sop_instance_uid: str) -> PerformedStep | None:
        """The performed step of that SOP Instance UID, or None."""
        doc = await self._get(STEPS, sop_instance_uid)
        return None if doc is None else _step_of(doc)

    async def steps(
        self, status: str = "", updated_before: str = "", updated_after: str = ""
    ) -> AsyncIterator[PerformedStep]:
        """Performed steps of that status, last changed in [after, before), oldest change first."""
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        changed: dict[str, str] = {}
        if updated_before:
            changed["$lt"] = updated_before
        if updated_after:
            changed["$gte"] = updated_after
        if changed:
            query["updated_at"] = changed
        try:
            cursor = self._db[STEPS].find(query).sort([("updated_at", ASCENDING), ("_id", 1)])
            async for doc in cursor:
                yield _step_of(doc)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    # -- patients -------------------------------------------------------------------------------

    async def put_patient(self, patient: PatientDemographics) -> None:
        """Add or replace a patient's demographics; idempotent."""
        if not patient.patient_id or not isinstance(patient.dataset, dict):
            raise InvalidInput("a patient has a Patient ID and a DICOM JSON object")
        document = {
            "patient_id": patient.patient_id,
            "issuer_of_patient_id": patient.issuer_of_patient_id,
            "attrs": patient.dataset,
            "merged_into": patient.merged_into,
            "updated_at": patient.updated_at,
        }
        key = patient_key(patient.patient_id, patient.issuer_of_patient_id)
        await self._replace(PATIENTS, key, document)

    async def patient(
        self, patient_id: str, issuer_of_patient_id: str
    ) -> PatientDemographics | None:
        """That patient's demographics, or None."""
        doc = await self._get(PATIENTS, patient_key(patient_id, issuer_of_patient_id))
        if doc is None:
            return None
        return PatientDemographics(
            patient_id, issuer_of_patient_id, doc["attrs"], doc["merged_into"], doc["updated_at"]
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Raise CatalogUnavailable unless the server answers a ping."""
        try:
            await self._db.command("ping")
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        """Close the client's connections, between two server checks (see _mongo_checks)."""
        await self._checks.settled(at_most=10)
        await self._client.close()
