"""The checks of an MPPS N-CREATE and N-SET against PS3.4 Table F.7.2-1.

:func:`check_create` refuses an N-CREATE (F.7.2.1) that lacks a Type 1
attribute or its value, or is not IN PROGRESS; :func:`check_set` refuses an
N-SET (F.7.2.2) of a step in its final state, of an attribute N-SET may not
change, or one that leaves the Final State requirements unmet. Each refusal
is a :class:`Refusal` with its status (PS3.4 F.7.2.1.2, F.7.2.2.2, PS3.7 C):
0x0120 Missing Attribute, 0x0121 Missing Attribute Value, 0x0106 Invalid
Attribute Value, 0x0105 No Such Attribute, 0x0110 Processing Failure with
Error ID 0xA710 once a step is COMPLETED or DISCONTINUED.
"""

from __future__ import annotations

from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import DicomJson, first_text, text_of
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicom.vr_format import is_date, is_time


class NStatus:
    """DIMSE-N statuses of the MPPS SCP (PS3.7 C.4, PS3.4 F.7.2)."""

    SUCCESS = 0x0000
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    RESOURCE_LIMITATION = 0x0213

    NO_LONGER_UPDATABLE = 0xA710
    """Error ID of 0x0110 after the final state: "Performed Procedure Step Object may no
    longer be updated" (PS3.4 F.7.2.2.2)."""


class Refusal(Exception):
    """An MPPS request refused with ``status`` and an Error Comment."""

    def __init__(self, status: int, comment: str, *, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id


PERFORMED_STATION_AE_TITLE = tag_of("PerformedStationAETitle")
START_DATE = tag_of("PerformedProcedureStepStartDate")
START_TIME = tag_of("PerformedProcedureStepStartTime")
END_DATE = tag_of("PerformedProcedureStepEndDate")
END_TIME = tag_of("PerformedProcedureStepEndTime")
STEP_ID = tag_of("PerformedProcedureStepID")
STATUS = model.PERFORMED_STEP_STATUS
SSA = model.SCHEDULED_STEP_ATTRIBUTES_SEQUENCE
SERIES = model.PERFORMED_SERIES_SEQUENCE

CREATE_TYPE_1 = (PERFORMED_STATION_AE_TITLE, START_DATE, START_TIME, STATUS, STEP_ID, tags.MODALITY)
"""Attributes an N-CREATE must carry with a value (PS3.4 Table F.7.2-1, N-CREATE 1/1)."""
NOT_SETTABLE = frozenset(
    {
        SSA,
        tags.PATIENT_NAME,
        tags.PATIENT_ID,
        tags.ISSUER_OF_PATIENT_ID,
        tags.PATIENT_BIRTH_DATE,
        tags.PATIENT_SEX,
        tag_of("ReferencedPatientSequence"),
        PERFORMED_STATION_AE_TITLE,
        tag_of("PerformedStationName"),
        tag_of("PerformedLocation"),
        START_DATE,
        START_TIME,
        STEP_ID,
        tags.MODALITY,
        tags.STUDY_ID,
        tags.SOP_CLASS_UID,
        tags.SOP_INSTANCE_UID,
    }
)
"""Attributes N-SET may not change (PS3.4 Table F.7.2-1, N-SET "Not allowed")."""
SETTABLE_STATUSES = frozenset({model.IN_PROGRESS, *model.FINAL_PERFORMED_STATUSES})


def _name(tag: str) -> str:
    return f"({tag[:4]},{tag[4:]})"


def _check_value(tag: str, key: DicomJson) -> None:
    for value in text_of(key, skip_blank=True):
        vr = key.get("vr")
        wrong = (
            (vr == "DA" and not is_date(value))
            or (vr == "TM" and not is_time(value))
            or (vr == "UI" and not is_valid_uid(value))
        )
        if wrong:
            raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, f"{_name(tag)} has an invalid value")


def _check_values(data: DicomJson) -> None:
    for tag, key in data.items():
        if key.get("vr") == "SQ":
            for item in key.get("Value") or []:
                if isinstance(item, dict):
                    _check_values(item)
        else:
            _check_value(tag, key)


def _require(data: DicomJson, tag: str) -> None:
    if tag not in data:
        raise Refusal(NStatus.MISSING_ATTRIBUTE, f"{_name(tag)} is missing")
    key = data[tag]
    if not (text_of(key, skip_blank=True) or (key.get("vr") == "SQ" and key.get("Value"))):
        raise Refusal(NStatus.MISSING_ATTRIBUTE_VALUE, f"{_name(tag)} has no value")


def check_create(attributes: DicomJson) -> None:
    """Refuse an N-CREATE that Table F.7.2-1 does not allow (PS3.4 F.7.2.1)."""
    for tag in (*CREATE_TYPE_1, SSA):
        _require(attributes, tag)
    if first_text(attributes, STATUS).strip() != model.IN_PROGRESS:
        raise Refusal(
            NStatus.INVALID_ATTRIBUTE_VALUE, "PerformedProcedureStepStatus must be IN PROGRESS"
        )
    for item in attributes[SSA].get("Value") or []:
        if not isinstance(item, dict):
            raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, f"{_name(SSA)} has a bad item")
        _require(item, tags.STUDY_INSTANCE_UID)
    _check_values(attributes)


def _has_values(key: DicomJson | None) -> bool:
    return bool(text_of(key, skip_blank=True)) or bool(
        isinstance(key, dict) and key.get("vr") == "SQ" and key.get("Value")
    )


def _unchanged(stored: DicomJson | None, sent: DicomJson) -> bool:
    """Whether an N-SET re-sends a stored value (absent and empty are one)."""
    return stored == sent or not (_has_values(stored) or _has_values(sent))


def check_set(current: DicomJson, changes: DicomJson) -> tuple[DicomJson, DicomJson]:
    """The changes that change something and the step after them, or the refusal of
    Table F.7.2-1 (PS3.4 F.7.2.2).

    An attribute N-SET may not change is accepted when its value is the stored
    one: some modalities send the whole step with every N-SET. It is left out
    of the changes.
    """
    status = first_text(current, STATUS).strip()
    if status in model.FINAL_PERFORMED_STATUSES:
        raise Refusal(
            NStatus.PROCESSING_FAILURE,
            "Performed Procedure Step Object may no longer be updated",
            error_id=NStatus.NO_LONGER_UPDATABLE,
        )
    kept: DicomJson = {}
    for tag, key in changes.items():
        if tag not in NOT_SETTABLE:
            kept[tag] = key
        elif not _unchanged(current.get(tag), key):
            raise Refusal(NStatus.NO_SUCH_ATTRIBUTE, f"{_name(tag)} may not be set by N-SET")
    changes = kept
    _check_values(changes)
    updated = {**current, **changes}
    new_status = first_text(updated, STATUS).strip()
    if new_status not in SETTABLE_STATUSES:
        raise Refusal(
            NStatus.INVALID_ATTRIBUTE_VALUE,
            "PerformedProcedureStepStatus must be IN PROGRESS, COMPLETED or DISCONTINUED",
        )
    if new_status in model.FINAL_PERFORMED_STATUSES:
        # Final State requirements of Table F.7.2-1.
        _require(updated, END_DATE)
        _require(updated, END_TIME)
        if new_status == model.COMPLETED:
            _require(updated, SERIES)
            for item in updated[SERIES].get("Value") or []:
                _require(item, tags.SERIES_INSTANCE_UID)
    return changes, updated
