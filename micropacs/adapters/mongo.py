"""The distributed Catalog: MongoDB (or FerretDB) through PyMongo's ``AsyncMongoClient``.

Only operations MongoDB >= 6 and FerretDB 1.24 both support: no transactions,
no aggregation beyond the basics. Writes are idempotent upserts
(:mod:`micropacs.adapters._mongo_write`); replaying a batch, or finishing one
a crash interrupted, leaves the catalog as once.

Queries filter on indexed fields first (never dropping a true match), then
decide with :class:`~micropacs.dicom.matching.Matcher` (PS3.4 C.2.2.2),
reading at most ``Query.max_examined`` documents they throw away.

The filter is shaped for what FerretDB 1.24 hands down to its backend: only
top-level equalities on a field (no ``$and``, ``$in``, ``$regex`` or ranges), so
each field's first condition stands at the top level, a one-value list is an
equality, and a name wildcard or a date range within one month or year also
asks for its prefix or its month/year among the ``<field>_prefixes`` and
``<field>_keys`` arrays the write path keeps (:func:`_narrowing`). MongoDB
serves all of it from its indexes too.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import asdict
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import PyMongoError

from micropacs.adapters import _groups
from micropacs.adapters import _mongo_audit as _audit
from micropacs.adapters import _mongo_delete as _delete
from micropacs.adapters import _mongo_forwards as _forwards
from micropacs.adapters import _mongo_groups as _groups_mongo
from micropacs.adapters import _mongo_notices as _notices
from micropacs.adapters import _mongo_patients as _patients
from micropacs.adapters import _mongo_rejections as _rejections
from micropacs.adapters._mongo_checks import MonitorChecks
from micropacs.adapters._mongo_keys import backfill_keys
from micropacs.adapters._mongo_write import (
    INSTANCE_FIELDS,
    PATIENT_FIELDS,
    PREFIX_KEY_LENGTH,
    SERIES_FIELDS,
    STUDY_FIELDS,
    by_id,
    patient_key,
    upsert,
)
from micropacs.adapters._patients import patient_only, with_identity
from micropacs.dicom import levels, matching, tags
from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.levels import Level
from micropacs.errors import CatalogUnavailable, InvalidInput
from micropacs.ports import (
    AuditQuery,
    AuditRecord,
    CatalogCounts,
    Credential,
    ForwardEntry,
    ForwardFailure,
    ForwardQueueStats,
    ForwardState,
    InstanceLocation,
    InstanceMove,
    InstanceRecord,
    Node,
    PendingNotice,
    Query,
    RejectedInstance,
    Rejection,
    StepReferences,
    StorageUsage,
    StoredInstance,
    StudyInGroup,
)
from micropacs.redact import safe_url

T = TypeVar("T")

FIELDS = {
    Level.PATIENT: PATIENT_FIELDS,
    Level.STUDY: STUDY_FIELDS,
    Level.SERIES: SERIES_FIELDS,
    Level.IMAGE: INSTANCE_FIELDS,
}
COLLECTION = {
    Level.PATIENT: "patients",
    Level.STUDY: "studies",
    Level.SERIES: "series",
    Level.IMAGE: "instances",
}
INDEXES = {
    "patients": [
        "patient_id",
        "patient_name",
        "patient_name_fold",
        "patient_name_prefixes",
        "birth_date",
        "sex",
    ],
    "studies": [
        "patient_key",
        "patient_id",
        "patient_name",
        "patient_name_fold",
        "patient_name_prefixes",
        "study_date",
        "study_date_keys",
        "accession_number",
        "study_id",
        "referring_physician",
        "study_description",
        "modalities",
    ],
    "series": ["study", "patient_key", "modality", "series_date", "series_description"],
    "instances": ["series", "study", "patient_key", "sop_class"],
    "patient_updates": ["merged_into"],
    _audit.COLLECTION: ["time", "kind", "actor", "study_uids"],
    _rejections.COLLECTION: list(_rejections.INDEXED),
    _forwards.COLLECTION: ["destination", "enqueued_at"],
    _notices.COLLECTION: ["due_at"],
}


def _condition_filter(field: str, kind: str, cond: object, fold: bool) -> dict[str, Any] | None:
    """A Mongo filter on ``field`` that keeps every true match of ``cond`` (or None)."""
    if kind == "pn" and fold:
        field = f"{field}_fold"
    if isinstance(cond, matching.UidList) and kind == "uid":
        values = list(cond.values)
        return {field: values[0] if len(values) == 1 else {"$in": values}}
    if isinstance(cond, matching.Single):
        value = cond.value
        if kind == "pn":
            value = matching.fold(value) if fold else value
        elif kind == "da":
            value = matching.normal_date(value)
            if len(value) != 8:
                return None
        return {field: value}
    if isinstance(cond, matching.Wildcard) and kind in ("text", "pn"):
        prefix = matching.literal_prefix(cond.pattern)
        if kind == "pn":
            prefix = matching.normal_pn(prefix) if "*" not in cond.pattern else prefix
            prefix = matching.fold(prefix) if fold else prefix
        # Only an anchored, escaped literal goes to the server, which cannot backtrack;
        # the pattern is matched by Matcher. MongoDB refuses a NUL in a regex: cut there.
        prefix = prefix.partition("\x00")[0]
        if not prefix:
            return None
        return {field: {"$regex": "^" + re.escape(prefix)}}
    if isinstance(cond, matching.Range) and kind == "da":
        bounds: dict[str, str] = {}
        if cond.low:
            bounds["$gte"] = matching.normal_date(cond.low)
        if cond.high:
            bounds["$lte"] = matching.normal_date(cond.high)
        return {field: bounds} if bounds else None
    return None


def _narrowing(field: str, kind: str, cond: object) -> dict[str, Any] | None:
    """An equality on a key array of ``field`` that every true match of ``cond`` meets.

    A name wildcard's folded literal prefix is among ``<field>_prefixes`` of every name
    it matches (folding is character by character, so it folds prefixes to prefixes);
    a date range within one month (year) holds dates of that month (year) only.
    """
    if kind == "pn" and isinstance(cond, matching.Wildcard):
        prefix = matching.literal_prefix(cond.pattern)
        prefix = matching.normal_pn(prefix) if "*" not in cond.pattern else prefix
        key = matching.fold(prefix.partition("\x00")[0])[:PREFIX_KEY_LENGTH]
        return {f"{field}_prefixes": key} if key else None
    if kind == "da" and isinstance(cond, matching.Range) and cond.low and cond.high:
        low, high = matching.normal_date(cond.low), matching.normal_date(cond.high)
        if len(low) == len(high) == 8 and low <= high:
            for length in (6, 4):
                if low[:length] == high[:length]:
                    return {f"{field}_keys": low[:length]}
    return None


def flat_filter(clauses: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The conjunction of ``clauses`` with each field's first one at the top level.

    FerretDB 1.24 pushes down to its backend only top-level field conditions, never
    an ``$and`` (backends/postgresql/query.go, prepareWhereClause).
    """
    top: dict[str, Any] = {}
    rest: list[dict[str, Any]] = []
    for clause in clauses:
        field = next(iter(clause)) if len(clause) == 1 else "$"
        if field.startswith("$") or field in top:
            rest.append(clause)
        else:
            top[field] = clause[field]
    if rest:
        top["$and"] = rest
    return top


def query_filter(
    level: Level, conditions: dict[str, matching.Condition], fold: bool
) -> dict[str, Any]:
    """The filter of a collection query at ``level`` (keeps every true match)."""
    fields = FIELDS[level]
    clauses: list[dict[str, Any]] = []
    for tag, cond in conditions.items():
        if tag in fields:
            field, kind = fields[tag]
            clause = _condition_filter(field, kind, cond, fold)
            if clause:
                clauses.append(clause)
            narrowing = _narrowing(field, kind, cond)
            if narrowing:
                clauses.append(narrowing)
    return flat_filter(clauses)


def _names_uids(level: Level, conditions: dict[str, matching.Condition]) -> bool:
    """Whether a query at ``level`` reads its candidates by ``_id`` (see _by_hierarchy)."""
    named = {
        Level.PATIENT: (),
        Level.STUDY: (tags.STUDY_INSTANCE_UID,),
        Level.SERIES: (tags.SERIES_INSTANCE_UID, tags.STUDY_INSTANCE_UID),
        Level.IMAGE: (tags.SOP_INSTANCE_UID, tags.SERIES_INSTANCE_UID, tags.STUDY_INSTANCE_UID),
    }[level]
    return any(isinstance(conditions.get(tag), matching.UidList | matching.Single) for tag in named)


class MongoCatalog:
    """Catalog on MongoDB or FerretDB."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        name = parts.path.strip("/")
        if parts.scheme != "mongodb" or not name or not re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name):
            raise InvalidInput(f"{safe_url(url)!r} is not mongodb://HOST:PORT/DATABASE")
        self._url = url
        self._checks = MonitorChecks()
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            tz_aware=True,
            event_listeners=[self._checks],
        )
        self._db = self._client[name]
        self._fields_pushed_down = False

    def _unavailable(self, exc: Exception) -> CatalogUnavailable:
        host = urlsplit(self._url).netloc.rpartition("@")[2]  # never the URL's password
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            advice = "the server's TLS certificate is not trusted: check the URL's tlsCAFile"
        else:
            advice = "check that MongoDB (or FerretDB) runs and that the URL is right"
        return CatalogUnavailable(f"catalog at {host} failed: {exc}; {advice}")

    async def open(self) -> None:
        """Create the indexes and the key arrays documents written before them lack
        (idempotent)."""
        try:
            for collection, fields in INDEXES.items():
                for field in fields:
                    await self._db[collection].create_index([(field, ASCENDING)])
            await backfill_keys(self._db)
            self._fields_pushed_down = await _pushes_down_fields(self._db)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def upsert_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Upsert instances and their entities, then derive the computed attributes."""
        if not records:
            return
        try:
            records = await _rejections.held_back(self._db, records)
            if not records:
                return
            keys = {patient_key(record) for record in records}
            resolved = await _patients.resolve(self._db, keys)
            await upsert(self._db, _patients.file_records(records, resolved))
            # A change of the RIS recorded while this batch was written is applied again
            # now, so the last writer of the patient is never the stale header.
            again = await _patients.resolve(self._db, keys)
            for key in keys:
                if again.get(key) == resolved.get(key):
                    continue
                target = again[key][0]
                if target != key:
                    await _patients.merge(self._db, key, target)
                else:
                    await _patients.apply(self._db, key)
            # A rejection written while this batch was: hidden now (see _mongo_rejections).
            uids = [record.sop_instance_uid for record in records]
            late = await _rejections.rejected_among(self._db, uids)
            if late:
                await _rejections.hide(self._db, sorted(late))
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def remove_instances(
        self,
        study_uid: str,
        series_uid: str = "",
        sop_instance_uid: str = "",
        received_until: str = "",
    ) -> list[str]:
        """Remove a study's (series', instance's) instances received by ``received_until``,
        hidden from readers until done (:mod:`._mongo_delete`), and its rejected ones;
        their object keys."""
        try:
            removed = await _delete.remove(
                self._db, study_uid, series_uid, sop_instance_uid, received_until
            )
            return removed + await _rejections.release(
                self._db, study_uid, series_uid, sop_instance_uid, received_until
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def update_patient(
        self, patient_id: str, issuer_of_patient_id: str, attributes: DicomJson
    ) -> int:
        """Record the RIS's demographics, then apply them (see _mongo_patients)."""
        try:
            return await _patients.update(
                self._db, f"{issuer_of_patient_id}|{patient_id}", attributes
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def merge_patient(
        self,
        prior_patient_id: str,
        prior_issuer_of_patient_id: str,
        patient_id: str,
        issuer_of_patient_id: str,
    ) -> int:
        """Merge the prior patient into the survivor (see _mongo_patients); studies moved."""
        try:
            return await _patients.merge(
                self._db,
                f"{prior_issuer_of_patient_id}|{prior_patient_id}",
                f"{issuer_of_patient_id}|{patient_id}",
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def query(self, query: Query) -> AsyncIterator[DicomJson]:
        """Entities at ``query.level`` matching the identifier (PS3.4 C.2.2.2)."""
        if query.limit < 0 or query.offset < 0:
            raise InvalidInput("a query's limit and offset cannot be negative")
        conditions = matching.matching_keys(query.identifier)
        mongo_filter = query_filter(query.level, conditions, query.case_insensitive_pn)
        matcher = matching.Matcher(query.identifier, case_insensitive_pn=query.case_insensitive_pn)
        cache: dict[tuple[str, str], dict[str, Any] | None] = {}
        budget = matching.Budget(query.max_examined)
        skipped = produced = 0
        try:
            named = await self._by_hierarchy(query.level, conditions)
            docs: Any = named
            if named is None:
                collection = self._db[COLLECTION[query.level]]
                docs = collection.find(mongo_filter).sort("_id", ASCENDING)
            async for doc in _each(docs):
                record = await self._record(query.level, doc, cache)
                if record is None or not matcher(record):
                    budget.spend()
                    continue
                if skipped < query.offset:
                    skipped += 1
                    budget.spend()
                    continue
                yield record
                produced += 1
                if query.limit and produced >= query.limit:
                    break
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def explain(self, query: Query) -> dict[str, Any]:
        """The server's ``explain`` of the collection query ``query`` would run, or
        ``{"by_hierarchy": True}`` when it reads its candidates down the hierarchy instead
        (by ``_id``, and a series' instances by ``series``: see _by_hierarchy)."""
        conditions = matching.matching_keys(query.identifier)
        if _names_uids(query.level, conditions):
            return {"by_hierarchy": True}
        command = {
            "find": COLLECTION[query.level],
            "filter": query_filter(query.level, conditions, query.case_insensitive_pn),
        }
        try:
            return dict(await self._db.command("explain", command))
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def _by_hierarchy(
        self, level: Level, conditions: dict[str, matching.Condition]
    ) -> list[dict[str, Any]] | None:
        """The candidates a query's UIDs name, read by ``_id`` down the member arrays;
        None when it names none (then the indexed fields narrow a collection query)."""

        def uids(tag: str) -> list[str] | None:
            cond = conditions.get(tag)
            if isinstance(cond, matching.UidList):
                return list(cond.values)
            if isinstance(cond, matching.Single):
                return [cond.value]
            return None

        # A level's unique key is its _id, but for patients: theirs is issuer|PatientID.
        own = uids(levels.UNIQUE_KEY[level]) if level is not Level.PATIENT else None
        if own is not None:
            found = await by_id(self._db, COLLECTION[level], own)
        elif level is Level.IMAGE and (series := uids(tags.SERIES_INSTANCE_UID)) is not None:
            found = await self._instances_of_series(series)
        elif level is Level.IMAGE and (studies := uids(tags.STUDY_INSTANCE_UID)) is not None:
            found = await self._instances_of_series(await self._series_of_studies(studies))
        elif level is Level.SERIES and (studies := uids(tags.STUDY_INSTANCE_UID)) is not None:
            found = await by_id(self._db, "series", await self._series_of_studies(studies))
        else:
            return None
        return [found[key] for key in sorted(found)]

    async def _series_of_studies(self, studies: Sequence[str]) -> list[str]:
        docs = await by_id(self._db, "studies", studies, {"series_members": 1})
        return [uid for doc in docs.values() for uid in doc.get("series_members", [])]

    async def _instances_of_series(self, series: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self._fields_pushed_down:
            # One indexed query per series instead of one read per instance.
            found: dict[str, dict[str, Any]] = {}
            for uid in sorted(set(series)):
                async for doc in self._db.instances.find({"series": uid}):
                    found[doc["_id"]] = doc
            return found
        docs = await by_id(self._db, "series", series, {"members": 1})
        members = [m.split("|", 1)[1] for doc in docs.values() for m in doc.get("members", [])]
        return await by_id(self._db, "instances", members)

    async def _parent(
        self, collection: str, key: str, cache: dict[tuple[str, str], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        if (collection, key) not in cache:
            cache[(collection, key)] = await self._db[collection].find_one({"_id": key})
        return cache[(collection, key)]

    async def _record(
        self, level: Level, doc: dict[str, Any], cache: dict[tuple[str, str], dict[str, Any] | None]
    ) -> DicomJson | None:
        record: DicomJson = {}
        if level is Level.PATIENT:
            patient: dict[str, Any] | None = doc
        else:
            patient = await self._parent("patients", doc["patient_key"], cache)
        if patient is None:
            return None
        record.update(patient.get("attrs", {}))
        record[tags.NUMBER_OF_PATIENT_RELATED_STUDIES] = element("IS", patient.get("n_studies", 0))
        record[tags.NUMBER_OF_PATIENT_RELATED_SERIES] = element("IS", patient.get("n_series", 0))
        record[tags.NUMBER_OF_PATIENT_RELATED_INSTANCES] = element(
            "IS", patient.get("n_instances", 0)
        )
        if level is Level.PATIENT:
            return record
        study = doc if level is Level.STUDY else await self._parent("studies", doc["study"], cache)
        if study is None or study.get(_delete.HIDDEN):
            return None
        record.update(study.get("attrs", {}))
        record[tags.STUDY_INSTANCE_UID] = element("UI", study["_id"])
        record[tags.NUMBER_OF_STUDY_RELATED_SERIES] = element("IS", study.get("n_series", 0))
        record[tags.NUMBER_OF_STUDY_RELATED_INSTANCES] = element("IS", study.get("n_instances", 0))
        record[tags.MODALITIES_IN_STUDY] = element("CS", *study.get("modalities", []))
        record[tags.SOP_CLASSES_IN_STUDY] = element("UI", *study.get("sop_classes", []))
        if level is Level.STUDY:
            return record
        series = (
            doc if level is Level.SERIES else await self._parent("series", doc["series"], cache)
        )
        if series is None or series.get(_delete.HIDDEN):
            return None
        record.update(series.get("attrs", {}))
        record[tags.SERIES_INSTANCE_UID] = element("UI", series["_id"])
        record[tags.NUMBER_OF_SERIES_RELATED_INSTANCES] = element(
            "IS", series.get("n_instances", 0)
        )
        if level is Level.SERIES:
            return record
        record.update(doc.get("attrs", {}))
        record[tags.SOP_INSTANCE_UID] = element("UI", doc["_id"])
        record[tags.SOP_CLASS_UID] = element("UI", doc["sop_class"])
        return record

    async def locate(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
        patient_ids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The instances under the given entities, in series and instance order."""
        try:
            if sop_instance_uids:
                found = await by_id(self._db, "instances", sop_instance_uids)
            elif series_uids:
                found = await self._instances_of_series(series_uids)
            elif study_uids:
                found = await self._instances_of_series(await self._series_of_studies(study_uids))
            elif patient_ids:
                patients = await self._db.patients.find(
                    {"patient_id": {"$in": list(patient_ids)}}, {"study_members": 1}
                ).to_list(None)
                studies = [uid for p in patients for uid in p.get("study_members", [])]
                found = await self._instances_of_series(await self._series_of_studies(studies))
            else:
                return []
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        docs = [
            d
            for d in found.values()
            if (not study_uids or d["study"] in study_uids)
            and (not series_uids or d["series"] in series_uids)
            and (not patient_ids or d["patient_key"].split("|", 1)[1] in patient_ids)
        ]
        docs = await self._shown(docs)
        docs.sort(key=lambda d: (d["series"], d.get("instance_number") or 0, d["_id"]))
        changed = await self._changed_patients({d["patient_key"] for d in docs})
        return [
            InstanceLocation(
                sop_instance_uid=d["_id"],
                sop_class_uid=d["sop_class"],
                series_instance_uid=d["series"],
                study_instance_uid=d["study"],
                object_key=d["object_key"],
                transfer_syntax_uid=d["transfer_syntax"],
                size=int(d.get("size", 0)),
                patient=changed.get(d["patient_key"], {}),
                sha256=str(d.get("sha256", "")),
            )
            for d in docs
        ]

    async def _shown(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The instance documents whose study and series are not being removed, at their
        new keys where their study's move switched (:mod:`._mongo_groups`)."""
        projection = {_delete.HIDDEN: 1, _groups_mongo.MOVING: 1}
        try:
            studies = await by_id(self._db, "studies", {d["study"] for d in docs}, projection)
            series = await by_id(self._db, "series", {d["series"] for d in docs}, projection)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        hidden = {
            uid for found in (studies, series) for uid, d in found.items() if d.get(_delete.HIDDEN)
        }
        return [
            _groups_mongo.switched(d, studies.get(d["study"]))
            for d in docs
            if d["study"] not in hidden and d["series"] not in hidden
        ]

    async def _changed_patients(self, keys: set[str]) -> dict[str, DicomJson]:
        """The attributes of those of these patients the RIS changed (InstanceLocation)."""
        try:
            changed = await by_id(self._db, "patient_updates", keys, {"_id": 1})
            patients = await by_id(self._db, "patients", changed, {"attrs": 1})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return {
            key: with_identity(patient_only(doc.get("attrs", {})), *_patients.identity_of(key))
            for key, doc in patients.items()
        }

    async def counts(self) -> CatalogCounts:
        """Numbers of patients, studies, series and instances."""
        try:
            return CatalogCounts(
                patients=await self._db.patients.count_documents({}),
                studies=await self._db.studies.count_documents({}),
                series=await self._db.series.count_documents({}),
                instances=await self._db.instances.count_documents({}),
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def storage_usage(self) -> list[StorageUsage]:
        """Instances and bytes per storage group, summed by the server (``$group`` over the
        instances' ``storage_group`` and ``size``): like :meth:`counts`, passes inside the
        database and a handful of documents back. Increments kept beside the instances
        could drift, since a batch's writes are not one transaction; the admin status
        asks at most every :data:`services.admin.status.STORAGE_MAX_AGE` seconds."""
        sums: dict[str, dict[str, int]] = {}
        try:
            # One accumulator per $group: FerretDB 2 answers 0 for any but a group's first.
            for name, accumulator in (("instances", 1), ("bytes", "$size")):
                cursor = await self._db.instances.aggregate(
                    [{"$group": {"_id": "$storage_group", name: {"$sum": accumulator}}}]
                )
                for group in await cursor.to_list(None):
                    sums.setdefault(str(group["_id"]), {})[name] = int(group[name])
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return [
            StorageUsage(group, found.get("instances", 0), found.get("bytes", 0))
            for group, found in sorted(sums.items())
            if found.get("instances", 0) > 0
        ]

    async def put_node(self, node: Node) -> None:
        """Add or replace a node."""
        try:
            networks = [str(network) for network in node.networks()]
            fingerprints = list(node.fingerprints())
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        fields = {k: v for k, v in node.__dict__.items() if k != "ae_title"}
        fields["allowed_from"] = networks
        fields["tls_certificates"] = fingerprints
        try:
            await self._db.nodes.replace_one({"_id": node.ae_title}, fields, upsert=True)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def remove_node(self, ae_title: str) -> bool:
        """Remove a node; False if absent."""
        try:
            result = await self._db.nodes.delete_one({"_id": ae_title})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return bool(result.deleted_count)

    async def nodes(self) -> list[Node]:
        """Every node, by AE title."""
        try:
            docs = await self._db.nodes.find({}).sort("_id", ASCENDING).to_list(None)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        # A node stored before access control lacks its fields: the defaults apply.
        return [
            Node(
                ae_title=d.pop("_id"),
                **{
                    **d,
                    "allowed_from": tuple(d.get("allowed_from", ())),
                    "tls_certificates": tuple(d.get("tls_certificates", ())),
                },
            )
            for d in docs
        ]

    async def put_credential(self, credential: Credential) -> None:
        """Add or replace the credential of that kind and name."""
        key = _credential_key(credential.kind, credential.name)
        try:
            await self._db.credentials.replace_one({"_id": key}, asdict(credential), upsert=True)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def credential(self, kind: str, name: str) -> Credential | None:
        """The credential of that kind and name, or None (read by ``_id``)."""
        try:
            doc = await self._db.credentials.find_one({"_id": _credential_key(kind, name)})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return None if doc is None else _credential_of(doc)

    async def credentials(self, kind: str) -> list[Credential]:
        """Every credential of that kind, by name."""
        try:
            docs = await self._db.credentials.find({"kind": kind}).to_list(None)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return sorted((_credential_of(doc) for doc in docs), key=lambda c: c.name)

    async def remove_credential(self, kind: str, name: str) -> bool:
        """Remove a credential; False if absent."""
        try:
            result = await self._db.credentials.delete_one({"_id": _credential_key(kind, name)})
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return bool(result.deleted_count)

    async def put_audit(self, records: Sequence[AuditRecord]) -> None:
        """Store audit records; idempotent by event id (:mod:`._mongo_audit`)."""
        if not records:
            return
        try:
            await _audit.put(self._db, records)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The audit records matching ``query``, newest first."""
        try:
            return await _audit.select(self._db, query)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def enqueue_forwards(self, entries: Sequence[ForwardEntry]) -> None:
        """Queue entries not queued yet (:mod:`._mongo_forwards`)."""
        if entries:
            await self._forwards(_forwards.enqueue(self._db, entries))

    async def claim_forwards(
        self, destination: str, now: float, limit: int, lease: float
    ) -> list[ForwardEntry]:
        """Lease the head of a destination's queue."""
        return await self._forwards(_forwards.claim(self._db, destination, now, limit, lease))

    async def complete_forwards(self, entry_ids: Sequence[str]) -> None:
        """Remove sent entries."""
        if entry_ids:
            await self._forwards(_forwards.complete(self._db, entry_ids))

    async def fail_forwards(self, failures: Sequence[ForwardFailure]) -> None:
        """Count failed attempts and schedule the next ones (or give up)."""
        if failures:
            await self._forwards(_forwards.fail(self._db, failures))

    async def expire_forwards(self, destination: str, enqueued_before: float, error: str) -> int:
        """Make a destination's entries older than the maximum age dead."""
        return await self._forwards(_forwards.expire(self._db, destination, enqueued_before, error))

    async def forward_queues(self) -> list[ForwardQueueStats]:
        """Counts per destination."""
        return await self._forwards(_forwards.stats(self._db))

    async def forward_entries(
        self, destination: str, state: ForwardState | None, limit: int, offset: int = 0
    ) -> list[ForwardEntry]:
        """A page of a destination's entries, oldest enqueued first."""
        if limit < 0 or offset < 0:
            raise InvalidInput("a page's limit and offset cannot be negative")
        return await self._forwards(_forwards.page(self._db, destination, state, limit, offset))

    async def retry_forwards(self, destination: str, entry_ids: Sequence[str], now: float) -> int:
        """Make entries waiting again, due now."""
        return await self._forwards(_forwards.retry(self._db, destination, entry_ids, now))

    async def cancel_forwards(
        self, destination: str, entry_ids: Sequence[str], state: ForwardState | None
    ) -> int:
        """Remove entries of a destination."""
        return await self._forwards(_forwards.cancel(self._db, destination, entry_ids, state))

    async def _forwards(self, operation: Coroutine[Any, Any, T]) -> T:
        try:
            return await operation
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def note_instances(
        self,
        study_uid: str,
        destinations: Sequence[str],
        due_at: float,
        bus_partition: int,
        bus_offset: int,
    ) -> None:
        """Create or postpone a study's notices (:mod:`._mongo_notices`)."""
        if destinations:
            await self._noticing(
                _notices.note_instances(
                    self._db, study_uid, destinations, due_at, bus_partition, bus_offset
                )
            )

    async def note_performed_step(
        self, study_uid: str, destinations: Sequence[str], due_at: float, step: StepReferences
    ) -> None:
        """Add a completed performed step to a study's notices."""
        if destinations:
            await self._noticing(
                _notices.note_performed_step(self._db, study_uid, destinations, due_at, step)
            )

    async def claim_notices(self, now: float, limit: int, lease: float) -> list[PendingNotice]:
        """Lease the notices due or waiting for steps."""
        return await self._noticing(_notices.claim(self._db, now, limit, lease))

    async def settle_notice(self, notice: PendingNotice, retry_at: float | None) -> bool:
        """Remove or reschedule a claimed notice."""
        return await self._noticing(_notices.settle(self._db, notice, retry_at))

    async def release_notices(self, notices: Sequence[PendingNotice]) -> None:
        """End the leases of claimed notices."""
        if notices:
            await self._noticing(_notices.release(self._db, notices))

    async def notice_backlog(self) -> dict[str, int]:
        """Pending notices per destination."""
        return await self._noticing(_notices.backlog(self._db))

    async def _noticing(self, operation: Coroutine[Any, Any, T]) -> T:
        try:
            return await operation
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def reject_instances(self, rejections: Sequence[Rejection]) -> int:
        """Record rejections, then hide the instances held (:mod:`._mongo_rejections`)."""
        if not rejections:
            return 0
        try:
            return await _rejections.reject(self._db, rejections)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def locate_rejected(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The held rejected instances under the given entities (none given: none)."""
        if not (study_uids or series_uids or sop_instance_uids):
            return []
        try:
            return await _rejections.located(self._db, study_uids, series_uids, sop_instance_uids)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def rejected_instances(self, rejected_until: str, limit: int) -> list[RejectedInstance]:
        """Held rejected instances rejected by ``rejected_until``, oldest first."""
        if limit < 0:
            raise InvalidInput("a limit cannot be negative")
        try:
            return await _rejections.held(self._db, rejected_until, limit)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def studies_in_group(
        self,
        storage_group: str,
        received_before: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[StudyInGroup]:
        """A page of a group's studies, least recently received first, once the moves a
        crash left half written are finished (:mod:`._mongo_groups`)."""
        _groups.check_limit(limit)
        try:
            await _groups_mongo.finish_all(
                self._db, self._study_instances, self._fields_pushed_down
            )
            return await _groups_mongo.studies(
                self._db, storage_group, received_before, after, limit
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def stored_instances(self, study_uid: str) -> list[StoredInstance]:
        """The study's instances with their storage group, key and receive time."""
        try:
            docs = await self._shown(await self._study_instances(study_uid))
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        return _groups_mongo.stored(docs)

    async def move_instances(self, study_uid: str, moves: Sequence[InstanceMove]) -> int:
        """Switch a study's instances to their new keys at once (:mod:`._mongo_groups`)."""
        checked = _groups.check_moves(study_uid, moves)
        if not checked:
            return 0
        try:
            return await _groups_mongo.move(
                self._db, study_uid, checked, self._study_instances, self._fields_pushed_down
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def _study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """The instance documents of one study, as stored (read through its series)."""
        found = await self._instances_of_series(await self._series_of_studies([study_uid]))
        return [doc for doc in found.values() if doc.get("study") == study_uid]

    async def check(self) -> None:
        """Raise CatalogUnavailable unless the server answers a ping."""
        try:
            await self._db.command("ping")
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        """Close the client's connections, between two server checks (see _mongo_checks)."""
        await self._checks.settled(at_most=10)  # a check: connect and hello, 5 s each at most
        await self._client.close()


async def _pushes_down_fields(db: Any) -> bool:
    """Whether the server answers an equality on a field from an index rather than by
    reading the collection: MongoDB (its explain has no ``filterPushdown``) and
    FerretDB on PostgreSQL do; FerretDB on SQLite pushes down only ``_id``."""
    plan = await db.command("explain", {"find": "instances", "filter": {"series": "1"}})
    return bool(plan.get("filterPushdown", True))


def _credential_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def _credential_of(doc: dict[str, Any]) -> Credential:
    doc.pop("_id", None)
    return Credential(**doc)


async def _each(docs: Any) -> AsyncIterator[dict[str, Any]]:
    """The documents of a list or of a cursor, one by one."""
    if isinstance(docs, list):
        for doc in docs:
            yield doc
    else:
        async for doc in docs:
            yield doc
