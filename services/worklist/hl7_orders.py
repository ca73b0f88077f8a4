"""HL7 v2 orders (ORM^O01, OMI^O23) as worklist items (IHE RAD TF-2 4.4, 4.13).

IHE Scheduled Workflow's Procedure Scheduled (RAD-4) and Procedure Update
(RAD-13) transactions, and its mapping of HL7 fields to the Modality
Worklist attributes (PS3.4 K.6.1, PS3.3 C.4.10-C.4.11, C.30): each ORC group
(ORC with the OBR, TQ1, IPC and ZDS after it) is one requested procedure; an
OMI's IPC segments are its scheduled steps, an ORM's OBR is one step.
ORC-1 says what happens: NW (new) and XO (changed) put the whole item,
CA (cancelled) and DC (discontinued) change its status only. The mapping
table is in docs/worklist.md ("HL7 v2 mapping").

An item's ``item_id`` is its order number and its Scheduled Procedure Step
ID, so an XO, CA or DC reaches the item its NW made. The order number is the
placer's when there is one: the Order Placer assigns it and it stays (IHE RAD
TF-2 4.4.4.1), while the filler number may be added by a later message;
without one, the filler's. A Study Instance UID the order does not carry
(ZDS-1, IPC-3) is derived from the same order number and the Requested
Procedure ID, so the same order sent twice, or changed, keeps its study.

A step that names no station (ORM, or an IPC-9 left empty) gets the
Scheduled Station AE Titles the site configured for its procedure code or
modality (:attr:`Hl7Context.stations`). At most :data:`MAX_ORDER_GROUPS` ORC
groups are read from one message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from micropacs.dicom import tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson, element, first_text
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.events import WorklistItemPut, WorklistItemStatus
from services.worklist.hl7_message import (
    ErrorCode,
    Hl7Context,
    Hl7Message,
    Hl7Reject,
    Location,
    name_of,
    with_charset,
)
from services.worklist.hl7_patients import (
    LO_MAX,
    date_of,
    first_pid,
    name_element,
    patient_module,
    provider_name,
    short_string,
    time_of,
)

PLACER_ORDER_NUMBER = tag_of("PlacerOrderNumberImagingServiceRequest")
FILLER_ORDER_NUMBER = tag_of("FillerOrderNumberImagingServiceRequest")
REQUESTING_PHYSICIAN = tag_of("RequestingPhysician")
REQUESTED_PROCEDURE_CODE_SEQUENCE = tag_of("RequestedProcedureCodeSequence")
REQUESTED_PROCEDURE_PRIORITY = tag_of("RequestedProcedurePriority")
REASON_FOR_REQUESTED_PROCEDURE = tag_of("ReasonForTheRequestedProcedure")
PATIENT_TRANSPORT_ARRANGEMENTS = tag_of("PatientTransportArrangements")
SCHEDULED_PROTOCOL_CODE_SEQUENCE = tag_of("ScheduledProtocolCodeSequence")
SCHEDULED_STEP_LOCATION = tag_of("ScheduledProcedureStepLocation")
ADMISSION_ID = tag_of("AdmissionID")
CURRENT_PATIENT_LOCATION = tag_of("CurrentPatientLocation")
PATIENT_STATE = tag_of("PatientState")
MEDICAL_ALERTS = tag_of("MedicalAlerts")
CODE_VALUE = tag_of("CodeValue")
CODING_SCHEME_DESIGNATOR = tag_of("CodingSchemeDesignator")
CODE_MEANING = tag_of("CodeMeaning")

PUT_CONTROLS = frozenset({"NW", "XO"})
STATUS_CONTROLS = {"CA": wl.CANCELED, "DC": wl.DISCONTINUED}
"""ORC-1 order control (HL7 table 0119) -> the ScheduledProcedureStepStatus it sets."""

PRIORITIES = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}
"""TQ1-9 / TQ-6 priority (HL7 table 0485) -> Requested Procedure Priority (PS3.3 C.4.11)."""

MAX_ORDER_GROUPS = 100
"""Most ORC groups (requested procedures) taken from one message; more are refused (AE)."""

OrderEvent = WorklistItemPut | WorklistItemStatus

_ORDER_NAMESPACE = uuid.UUID("6d1b3c52-5a8e-4c43-9a59-2f0f3c1e8b21")
"""Name-based (version 5) UUIDs of orders: the same order gives the same Study Instance UID."""


@dataclass
class OrderGroup:
    """One ORC and the segments of its requested procedure that follow it."""

    orc: Any
    obr: Any = None
    tq1: Any = None
    zds: Any = None
    ipcs: list[Any] = field(default_factory=list)


def groups_of(msg: Hl7Message) -> list[OrderGroup]:
    """The ORC groups, in order; Hl7Reject 100 for an order segment before any ORC or for
    more than :data:`MAX_ORDER_GROUPS` groups."""
    groups: list[OrderGroup] = []
    for seg in msg.message:
        name = name_of(seg)
        if name == "ORC":
            if len(groups) == MAX_ORDER_GROUPS:
                raise Hl7Reject(
                    ErrorCode.SEGMENT_SEQUENCE_ERROR,
                    f"more than {MAX_ORDER_GROUPS} ORC groups in one message",
                    msg.location(seg),
                )
            groups.append(OrderGroup(seg))
        elif name in ("OBR", "TQ1", "ZDS", "IPC"):
            if not groups:
                raise Hl7Reject(
                    ErrorCode.SEGMENT_SEQUENCE_ERROR, f"{name} before any ORC", Location(name)
                )
            group = groups[-1]
            if name == "IPC":
                group.ipcs.append(seg)
            elif getattr(group, name.lower()) is None:
                setattr(group, name.lower(), seg)
    if not groups:
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "ORC segment missing", Location("ORC"))
    return groups


def order_events(msg: Hl7Message, context: Hl7Context) -> list[OrderEvent]:
    """The worklist events of an ORM^O01 or OMI^O23, one per scheduled step."""
    patient: DicomJson | None = None
    visit = _visit(msg)
    events: list[OrderEvent] = []
    for group in groups_of(msg):
        control = msg.value(group.orc, 1).upper()
        if control not in PUT_CONTROLS and control not in STATUS_CONTROLS:
            where = Location("ORC", 1)
            if not control:
                raise Hl7Reject(ErrorCode.REQUIRED_FIELD_MISSING, f"{where} is missing", where)
            raise Hl7Reject(
                ErrorCode.TABLE_VALUE_NOT_FOUND, f"{where} is not NW, XO, CA or DC", where
            )
        if group.obr is None:
            raise Hl7Reject(
                ErrorCode.SEGMENT_SEQUENCE_ERROR, "OBR segment missing", Location("OBR")
            )
        if patient is None:
            _, _, patient = patient_module(msg, first_pid(msg), context.default_issuer)
        request = _request(msg, group, {**patient, **visit})
        for step in _steps(msg, group, request, control in PUT_CONTROLS, context):
            item_id = _item_id(request, first_text(step, wl.SCHEDULED_STEP_ID))
            if control in PUT_CONTROLS:
                dataset = dict(request)
                dataset[wl.SCHEDULED_PROCEDURE_STEP_SEQUENCE] = element("SQ", step)
                events.append(
                    WorklistItemPut(
                        item_id=item_id, dataset=with_charset(dataset, msg), source="hl7"
                    )
                )
            else:
                events.append(
                    WorklistItemStatus(
                        item_id=item_id, status=STATUS_CONTROLS[control], source="hl7"
                    )
                )
    return events


def _visit(msg: Hl7Message) -> DicomJson:
    """The visit attributes of the message's PV1 (none without one)."""
    pv1 = msg.first("PV1")
    if pv1 is None:
        return {}
    location = "^".join(msg.value(pv1, 3, 1, c) for c in range(1, 4)).rstrip("^")
    return {
        ADMISSION_ID: _text(msg.value(pv1, 19)),
        CURRENT_PATIENT_LOCATION: _text(location),
        tags.REFERRING_PHYSICIAN_NAME: name_element(provider_name(msg, pv1, 8)),
    }


def _text(value: str) -> DicomJson:
    """A LO element from free text, cut to 64 characters as IHE's mapping does."""
    value = value.strip()[:LO_MAX]
    return element("LO", value) if value else element("LO")


def _code_item(msg: Hl7Message, seg: Any, field_no: int, first: int) -> list[DicomJson]:
    """A Code Sequence item (PS3.3 8.8) from 3 components of a CE (code^text^scheme)."""
    code, meaning, scheme = (msg.value(seg, field_no, 1, c) for c in range(first, first + 3))
    if not code:
        return []
    item: DicomJson = {CODE_VALUE: element("SH", code[:16])}
    if scheme:
        item[CODING_SCHEME_DESIGNATOR] = element("SH", scheme[:16])
    if meaning:
        item[CODE_MEANING] = element("LO", meaning[:LO_MAX])
    return [item]


def _request(msg: Hl7Message, group: OrderGroup, patient: DicomJson) -> DicomJson:
    """``patient`` (and visit) with the imaging service request and requested procedure of
    one ORC group."""
    orc, obr = group.orc, group.obr
    ipc = group.ipcs[0] if group.ipcs else None
    data: DicomJson = dict(patient)
    placer = msg.value(orc, 2) or msg.value(obr, 2)
    filler = msg.value(orc, 3) or msg.value(obr, 3)
    if not placer and not filler:
        where = Location("ORC", 3)
        raise Hl7Reject(
            ErrorCode.REQUIRED_FIELD_MISSING, "ORC-2 and ORC-3 (order number) are missing", where
        )
    data[PLACER_ORDER_NUMBER] = _text(short_string(placer, Location("ORC", 2), LO_MAX))
    data[FILLER_ORDER_NUMBER] = _text(short_string(filler, Location("ORC", 3), LO_MAX))
    requester = provider_name(msg, obr, 16) or provider_name(msg, orc, 12)
    data[REQUESTING_PHYSICIAN] = name_element(requester)
    if ipc is not None:
        accession, accession_at = msg.value(ipc, 1), Location("IPC", 1)
        procedure_id, procedure_at = msg.value(ipc, 2), Location("IPC", 2)
    else:
        accession, accession_at = msg.value(obr, 18), Location("OBR", 18)
        procedure_id, procedure_at = msg.value(obr, 19), Location("OBR", 19)
    data[tags.ACCESSION_NUMBER] = element("SH", short_string(accession, accession_at))
    if not procedure_id:
        raise Hl7Reject(
            ErrorCode.REQUIRED_FIELD_MISSING,
            f"{procedure_at} (requested procedure ID) is missing",
            procedure_at,
        )
    data[wl.REQUESTED_PROCEDURE_ID] = element("SH", short_string(procedure_id, procedure_at))
    coded = 44 if msg.value(obr, 44) else 4
    data[wl.REQUESTED_PROCEDURE_DESCRIPTION] = _text(msg.value(obr, coded, 1, 2))
    data[REQUESTED_PROCEDURE_CODE_SEQUENCE] = element("SQ", *_code_item(msg, obr, coded, 1))
    priority = (
        (msg.value(group.tq1, 9) if group.tq1 is not None else "")
        or msg.value(orc, 7, 1, 6)
        or msg.value(obr, 27, 1, 6)
    )
    if priority.upper() in PRIORITIES:
        data[REQUESTED_PROCEDURE_PRIORITY] = element("SH", PRIORITIES[priority.upper()])
    data[REASON_FOR_REQUESTED_PROCEDURE] = _text(msg.value(obr, 31, 1, 2) or msg.value(obr, 31))
    data[PATIENT_TRANSPORT_ARRANGEMENTS] = _text(msg.value(obr, 30))
    data[PATIENT_STATE] = _text(msg.value(obr, 12))
    data[MEDICAL_ALERTS] = _text(msg.value(obr, 13))
    data[tags.STUDY_INSTANCE_UID] = element("UI", _study_uid(msg, group, placer, filler))
    return data


def _study_uid(msg: Hl7Message, group: OrderGroup, placer: str, filler: str) -> str:
    """ZDS-1 or IPC-3 when the order carries one, else derived from the order (PS3.5 B.2)."""
    for seg, field_no in ((group.zds, 1), (group.ipcs[0] if group.ipcs else None, 3)):
        if seg is None:
            continue
        uid = msg.value(seg, field_no).strip()
        if uid:
            where = Location(name_of(seg), field_no)
            if not is_valid_uid(uid):
                raise Hl7Reject(ErrorCode.DATA_TYPE_ERROR, f"{where} is not a UID", where)
            return uid
    order = placer or filler
    procedure = msg.value(group.ipcs[0], 2) if group.ipcs else msg.value(group.obr, 19)
    return f"2.25.{uuid.uuid5(_ORDER_NAMESPACE, f'{order}|{procedure}').int}"


def _steps(
    msg: Hl7Message, group: OrderGroup, request: DicomJson, complete: bool, context: Hl7Context
) -> list[DicomJson]:
    """The Scheduled Procedure Step items: one per IPC (OMI), else one from OBR (ORM).

    ``complete`` (NW, XO) requires what a worklist item must have (PS3.4
    K.6.1.2.2, Type 1): a start date and a modality.
    """
    obr = group.obr
    start, start_at = "", Location("TQ1", 7)
    if group.tq1 is not None:
        start = msg.value(group.tq1, 7)
    if not start:
        start, start_at = msg.value(obr, 27, 1, 4), Location("OBR", 27, 4)
    if not start:
        start, start_at = msg.value(group.orc, 7, 1, 4), Location("ORC", 7, 4)
    if complete and not start:
        where = Location("TQ1", 7)
        raise Hl7Reject(
            ErrorCode.REQUIRED_FIELD_MISSING,
            "TQ1-7 (or OBR-27.4, ORC-7.4) start date/time is missing",
            where,
        )
    common: DicomJson = {wl.SCHEDULED_STEP_STATUS: element("CS", wl.SCHEDULED)}
    if start:
        common[wl.SCHEDULED_START_DATE] = element("DA", date_of(start, start_at))
        time = time_of(start, start_at)
        common[wl.SCHEDULED_START_TIME] = element("TM", time) if time else element("TM")
    performer = provider_name(msg, obr, 34)
    common[wl.SCHEDULED_PERFORMING_PHYSICIAN] = name_element(performer)
    fallback_id = wl.keys_of(request).requested_procedure_id
    steps: list[DicomJson] = []
    for index, ipc in enumerate(group.ipcs or [None], start=1):
        step = dict(common)
        if ipc is None:
            modality, modality_at = msg.value(obr, 24), Location("OBR", 24)
            step_id, step_at = msg.value(obr, 20), Location("OBR", 20)
            protocol_seg, protocol_field, first = obr, 4, 4
            stations = []
        else:
            modality, modality_at = msg.value(ipc, 5), Location("IPC", 5, sequence=index)
            step_id, step_at = msg.value(ipc, 4), Location("IPC", 4, sequence=index)
            protocol_seg, protocol_field, first = ipc, 6, 1
            step[wl.SCHEDULED_STATION_NAME] = element(
                "SH", *_repeated(msg, ipc, 7, Location("IPC", 7, sequence=index))
            )
            step[SCHEDULED_STEP_LOCATION] = element("SH", msg.value(ipc, 8)[:16])
            stations = _repeated(msg, ipc, 9, Location("IPC", 9, sequence=index))
        if complete and not modality:
            raise Hl7Reject(
                ErrorCode.REQUIRED_FIELD_MISSING,
                f"{modality_at} (modality) is missing",
                modality_at,
            )
        step[tags.MODALITY] = element("CS", short_string(modality.upper(), modality_at))
        if not stations:
            code = msg.value(obr, 4, 1, 1)
            stations = list(
                context.stations.get(code) or context.stations.get(modality.upper(), [])
            )
        step[wl.SCHEDULED_STATION_AE_TITLE] = element("AE", *stations)
        step[wl.SCHEDULED_STEP_ID] = element("SH", short_string(step_id or fallback_id, step_at))
        protocol = _code_item(msg, protocol_seg, protocol_field, first)
        step[SCHEDULED_PROTOCOL_CODE_SEQUENCE] = element("SQ", *protocol)
        description = msg.value(protocol_seg, protocol_field, 1, first + 1)
        if not description and ipc is None:
            description = msg.value(obr, 4, 1, 2)
        step[wl.SCHEDULED_STEP_DESCRIPTION] = _text(description)
        steps.append(step)
    return steps


def _repeated(msg: Hl7Message, seg: Any, field_no: int, where: Location) -> list[str]:
    """Every non-empty repetition of a field, each fitting a SH or AE value."""
    values = (msg.value(seg, field_no, rep) for rep in range(1, msg.repetitions(seg, field_no) + 1))
    return [short_string(value, where) for value in values if value.strip()]


def _item_id(request: DicomJson, step_id: str) -> str:
    """The order number (placer, else filler) and Scheduled Procedure Step ID, each %-quoted."""
    order = first_text(request, PLACER_ORDER_NUMBER) or first_text(request, FILLER_ORDER_NUMBER)
    return f"{quote(order, safe='')}:{quote(step_id, safe='')}"
