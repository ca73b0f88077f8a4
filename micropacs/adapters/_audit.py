"""What both catalogs' audit stores share (private): times in one sortable form, the
query's checks, a record as a plain document and back."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from micropacs.errors import InvalidInput
from micropacs.ports import AuditQuery, AuditRecord


def normal_time(text: str) -> str:
    """An ISO 8601 time as UTC with microseconds (``2026-01-02T03:04:05.000000+00:00``),
    so that comparing the strings compares the times; a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def checked(query: AuditQuery) -> AuditQuery:
    """``query`` with its times normalised; InvalidInput for a negative limit or offset."""
    if query.limit < 0 or query.offset < 0:
        raise InvalidInput("an audit query's limit and offset cannot be negative")
    return AuditQuery(
        since=normal_time(query.since) if query.since else "",
        until=normal_time(query.until) if query.until else "",
        kind=query.kind,
        actor=query.actor,
        study_uid=query.study_uid,
        outcome=query.outcome,
        limit=query.limit,
        offset=query.offset,
    )


def document(record: AuditRecord) -> dict[str, Any]:
    """A record as a plain document of JSON types, its time normalised."""
    doc = asdict(record)
    doc["time"] = normal_time(record.time)
    doc["study_uids"] = list(record.study_uids)
    doc["patient_ids"] = list(record.patient_ids)
    doc["operations"] = dict(record.operations)
    return doc


def record_of(doc: dict[str, Any]) -> AuditRecord:
    """The record of a :func:`document` (extra fields, such as a store's own, ignored)."""
    return AuditRecord(
        event_id=str(doc["event_id"]),
        time=str(doc["time"]),
        kind=str(doc["kind"]),
        outcome=int(doc["outcome"]),
        actor=str(doc["actor"]),
        role=str(doc.get("role", "")),
        source=str(doc.get("source", "")),
        destination=str(doc.get("destination", "")),
        study_uids=tuple(doc.get("study_uids", ())),
        patient_ids=tuple(doc.get("patient_ids", ())),
        operations={str(k): int(v) for k, v in dict(doc.get("operations", {})).items()},
        detail=str(doc.get("detail", "")),
    )
