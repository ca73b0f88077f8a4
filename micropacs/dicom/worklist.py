"""The DICOM model of the worklist: scheduled and performed procedure steps.

A worklist item is one Scheduled Procedure Step with its Requested Procedure,
Imaging Service Request, Visit and Patient (PS3.4 K.6.1, PS3.3 C.4.10-C.4.11),
kept as DICOM JSON (PS3.18 F.2) with exactly one item in its
ScheduledProcedureStepSequence. :func:`keys_of` extracts the matching keys
both worklist adapters index (PS3.4 K.6.1.2.1); everything else is matched on
the stored dataset by :mod:`micropacs.dicom.matching`.
"""

from __future__ import annotations

from dataclasses import dataclass

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element, first_text, text_of
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid

SCHEDULED_PROCEDURE_STEP_SEQUENCE = tag_of("ScheduledProcedureStepSequence")
SCHEDULED_STATION_AE_TITLE = tag_of("ScheduledStationAETitle")
SCHEDULED_STATION_NAME = tag_of("ScheduledStationName")
SCHEDULED_START_DATE = tag_of("ScheduledProcedureStepStartDate")
SCHEDULED_START_TIME = tag_of("ScheduledProcedureStepStartTime")
SCHEDULED_PERFORMING_PHYSICIAN = tag_of("ScheduledPerformingPhysicianName")
SCHEDULED_STEP_ID = tag_of("ScheduledProcedureStepID")
SCHEDULED_STEP_DESCRIPTION = tag_of("ScheduledProcedureStepDescription")
SCHEDULED_STEP_STATUS = tag_of("ScheduledProcedureStepStatus")
REQUESTED_PROCEDURE_ID = tag_of("RequestedProcedureID")
REQUESTED_PROCEDURE_DESCRIPTION = tag_of("RequestedProcedureDescription")

PERFORMED_STEP_STATUS = tag_of("PerformedProcedureStepStatus")
SCHEDULED_STEP_ATTRIBUTES_SEQUENCE = tag_of("ScheduledStepAttributesSequence")
PERFORMED_SERIES_SEQUENCE = tag_of("PerformedSeriesSequence")

SCHEDULED = "SCHEDULED"
STARTED = "STARTED"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
CANCELED = "CANCELED"
FINISHED_STATUSES = frozenset({COMPLETED, DISCONTINUED, CANCELED})
"""Steps a worklist query returns only when it asks for their status (PS3.4 K.6.1.2.2)."""

IN_PROGRESS = "IN PROGRESS"
"""The status an MPPS is created with (PS3.4 F.7.2.1.1)."""
FINAL_PERFORMED_STATUSES = frozenset({COMPLETED, DISCONTINUED})
"""After these an MPPS may no longer change (PS3.4 F.7.2.2.1, status 0x0110)."""

_PROGRESS = {STARTED: 1, COMPLETED: 2, DISCONTINUED: 2, CANCELED: 2}


def progress(status: str) -> int:
    """How far a step has gone: 0 scheduled (or arrived, ready), 1 started, 2 finished."""
    return _PROGRESS.get(status, 0)


def is_finished(dataset: DicomJson) -> bool:
    """Whether an item's step is over (:data:`FINISHED_STATUSES`, PS3.4 K.6.1.2.2)."""
    return first_text(scheduled_step(dataset), SCHEDULED_STEP_STATUS).strip() in FINISHED_STATUSES


@dataclass(frozen=True)
class WorklistKeys:
    """The indexed matching keys of one worklist item (PS3.4 K.6.1.2.1)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    accession_number: str
    requested_procedure_id: str
    study_instance_uid: str
    station_ae_titles: tuple[str, ...]
    modality: str
    start_date: str
    start_time: str
    performing_physician: str
    step_id: str
    status: str


def scheduled_step(dataset: DicomJson) -> DicomJson:
    """The one item of ScheduledProcedureStepSequence ({} when there is none)."""
    items = dataset.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE, {}).get("Value") or []
    first = items[0] if items else {}
    return first if isinstance(first, dict) else {}


def keys_of(dataset: DicomJson) -> WorklistKeys:
    """The indexed keys of an item; absent attributes are ""."""
    step = scheduled_step(dataset)
    return WorklistKeys(
        patient_id=first_text(dataset, tags.PATIENT_ID),
        issuer_of_patient_id=first_text(dataset, tags.ISSUER_OF_PATIENT_ID),
        patient_name=first_text(dataset, tags.PATIENT_NAME),
        accession_number=first_text(dataset, tags.ACCESSION_NUMBER),
        requested_procedure_id=first_text(dataset, REQUESTED_PROCEDURE_ID),
        study_instance_uid=first_text(dataset, tags.STUDY_INSTANCE_UID),
        station_ae_titles=tuple(text_of(step.get(SCHEDULED_STATION_AE_TITLE), skip_blank=True)),
        modality=first_text(step, tags.MODALITY),
        start_date=first_text(step, SCHEDULED_START_DATE),
        start_time=first_text(step, SCHEDULED_START_TIME),
        performing_physician=first_text(step, SCHEDULED_PERFORMING_PHYSICIAN),
        step_id=first_text(step, SCHEDULED_STEP_ID),
        status=first_text(step, SCHEDULED_STEP_STATUS) or SCHEDULED,
    )


def with_status(dataset: DicomJson, status: str) -> DicomJson:
    """A copy of the item whose scheduled step has ``status``."""
    step = dict(scheduled_step(dataset))
    step[SCHEDULED_STEP_STATUS] = {"vr": "CS", "Value": [status]}
    copy = dict(dataset)
    copy[SCHEDULED_PROCEDURE_STEP_SEQUENCE] = {"vr": "SQ", "Value": [step]}
    return copy


def scheduled_references(performed: DicomJson) -> list[DicomJson]:
    """Identifiers of the worklist items a performed step's ScheduledStepAttributesSequence
    names (PS3.3 C.4.13, IHE RAD TF-2 4.6.4.1.2): one per sequence item that names one.

    An item names a worklist item by its Scheduled Procedure Step ID and its
    Study Instance UID, which the modality copies from the worklist (Type 1
    in the N-CREATE); without a valid Study Instance UID, by the step ID and
    the Accession Number and Requested Procedure ID it holds. An item without
    a step ID is an unscheduled procedure or one the modality built itself
    (IHE RAD TF-2 4.6.4.1.2.4): it names no worklist item, so no item of its
    study changes. A value holding a wildcard or a backslash is left out, so
    that no reference matches more than it says.
    """
    found: list[DicomJson] = []
    sequence = performed.get(SCHEDULED_STEP_ATTRIBUTES_SEQUENCE, {})
    for attributes in sequence.get("Value") or []:
        if not isinstance(attributes, dict):
            continue
        step_id = _literal(attributes, SCHEDULED_STEP_ID)
        if not step_id:
            continue
        identifier: DicomJson = {}
        study = _literal(attributes, tags.STUDY_INSTANCE_UID)
        if is_valid_uid(study):
            identifier[tags.STUDY_INSTANCE_UID] = element("UI", study)
        else:
            for tag in (tags.ACCESSION_NUMBER, REQUESTED_PROCEDURE_ID):
                if value := _literal(attributes, tag):
                    identifier[tag] = element("SH", value)
        if identifier:
            step = {SCHEDULED_STEP_ID: element("SH", step_id)}
            identifier[SCHEDULED_PROCEDURE_STEP_SEQUENCE] = element("SQ", step)
            found.append(identifier)
    return found


def _literal(data: DicomJson, tag: str) -> str:
    """The value of ``tag`` when it is one value that matches only itself ("" otherwise)."""
    value = first_text(data, tag).strip()
    return "" if any(c in value for c in "*?\\") else value
