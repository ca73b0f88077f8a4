"""Rejection notes of IHE Imaging Object Change Management (IOCM, RAD TF-1 37, TF-3 4.66).

A rejection note is a Key Object Selection document (PS3.3 A.35.4) whose Document Title,
its Concept Name Code Sequence (0040,A043), is one of the four IOCM rejection titles of
CID 7011 (:data:`REJECTION_TITLES`). It names the instances it rejects in its Current
Requested Procedure Evidence Sequence (0040,A375, PS3.3 C.17.6): study, then Referenced
Series Sequence (0008,1115), then Referenced SOP Sequence (0008,1199).

The archive keeps the note itself like any other instance and hides what it rejects
(docs/iocm.md); this module only reads a stored instance's header (the DICOM JSON of its
``instance.stored`` event), so recognising a note costs no extra read of the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.dicom.uids import is_valid_uid
from micropacs.errors import InvalidInput
from micropacs.ports import InstanceRecord, Rejection

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
"""Key Object Selection Document Storage (PS3.4 B.5)."""

DCM = "DCM"
"""The coding scheme of the rejection titles (PS3.16 D)."""

REJECTION_TITLES: Mapping[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
"""The Document Titles (DCM code values and meanings) that make a KOS a rejection note."""

MAX_REJECTED = 100_000
"""The most instances one note may reject: more is refused as malformed, which bounds the
work one stored object can cause."""

CONCEPT_NAME_CODE_SEQUENCE = tags.tag_of("ConceptNameCodeSequence")
CODE_VALUE = tags.tag_of("CodeValue")
CODING_SCHEME_DESIGNATOR = tags.tag_of("CodingSchemeDesignator")
EVIDENCE_SEQUENCE = tags.tag_of("CurrentRequestedProcedureEvidenceSequence")
REFERENCED_SERIES_SEQUENCE = tags.tag_of("ReferencedSeriesSequence")
SERIES_INSTANCE_UID = tags.tag_of("SeriesInstanceUID")


class MalformedRejectionNote(InvalidInput):
    """A KOS with a rejection title whose references cannot be read: it rejects nothing.

    The message names what is wrong, never a UID or other patient data, so it may be
    logged as it is.
    """


@dataclass(frozen=True)
class RejectionNote:
    """A recognised rejection note: its title's code value and what it rejects."""

    reason: str
    rejections: tuple[Rejection, ...]


def rejection_title(header: DicomJson) -> str:
    """The rejection title's code value of a KOS header, or "" when it carries none."""
    for item in _items(header, CONCEPT_NAME_CODE_SEQUENCE):
        code = first_text(item, CODE_VALUE).strip()
        scheme = first_text(item, CODING_SCHEME_DESIGNATOR).strip()
        if scheme == DCM and code in REJECTION_TITLES:
            return code
    return ""


def rejection_note(record: InstanceRecord) -> RejectionNote | None:
    """The rejection note ``record`` is, or None for any other instance.

    Raises :class:`MalformedRejectionNote` for a KOS with a rejection title whose evidence
    is missing or names an instance without valid UIDs: such a note rejects nothing rather
    than a guess. A note never rejects itself; an instance it names twice counts once.
    """
    if record.sop_class_uid != KEY_OBJECT_SELECTION:
        return None
    reason = rejection_title(record.header)
    if not reason:
        return None
    rejected_at = normal_time(record.received_at)
    found: dict[str, Rejection] = {}
    studies = _items(record.header, EVIDENCE_SEQUENCE)
    if not studies:
        raise MalformedRejectionNote("rejection note without Current Requested Procedure Evidence")
    for study_item in studies:
        study = _uid(study_item, tags.STUDY_INSTANCE_UID, "StudyInstanceUID of its evidence")
        series_items = _items(study_item, REFERENCED_SERIES_SEQUENCE)
        if not series_items:
            raise MalformedRejectionNote("rejection note with a study of no Referenced Series")
        for series_item in series_items:
            series = _uid(series_item, SERIES_INSTANCE_UID, "SeriesInstanceUID of its evidence")
            sop_items = _items(series_item, tags.REFERENCED_SOP_SEQUENCE)
            if not sop_items:
                raise MalformedRejectionNote("rejection note with a series of no Referenced SOP")
            for sop_item in sop_items:
                sop = _uid(sop_item, tags.REFERENCED_SOP_INSTANCE_UID, "ReferencedSOPInstanceUID")
                if sop == record.sop_instance_uid or sop in found:
                    continue
                found[sop] = Rejection(
                    sop_instance_uid=sop,
                    series_instance_uid=series,
                    study_instance_uid=study,
                    note_uid=record.sop_instance_uid,
                    reason=reason,
                    rejected_at=rejected_at,
                )
                if len(found) > MAX_REJECTED:
                    raise MalformedRejectionNote(
                        f"rejection note naming more than {MAX_REJECTED} instances"
                    )
    return RejectionNote(reason=reason, rejections=tuple(found.values()))


def normal_time(moment: str | datetime) -> str:
    """A time as the catalog compares rejection times: ISO 8601 in UTC with microseconds,
    so that text order is time order (a time without zone is taken as UTC; an unreadable
    one as the epoch, the oldest)."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            moment = datetime.fromtimestamp(0, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _items(dataset: DicomJson, tag: str) -> list[DicomJson]:
    """The items of a sequence of ``dataset`` (those that are DICOM JSON objects)."""
    element = dataset.get(tag)
    values: Any = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list):
        return []
    return [item for item in values if isinstance(item, dict)]


def _uid(item: DicomJson, tag: str, name: str) -> str:
    """A UID of a reference item, or MalformedRejectionNote naming the attribute."""
    value = first_text(item, tag).rstrip("\x00 ")
    if not is_valid_uid(value):
        raise MalformedRejectionNote(f"rejection note with a missing or invalid {name}")
    return value
