"""Modality Performed Procedure Step SCP (PS3.4 F.7: the MPPS SOP Class).

:class:`PerformedSteps` checks an N-CREATE (F.7.2.1) or N-SET (F.7.2.2)
against Table F.7.2-1, publishes what it accepted (``mpps.created``,
``mpps.updated``, and the referenced worklist items' new status) and only then
answers Success: an acknowledged MPPS is on the event bus. The index writes the
Worklist store from those events; until it has, the steps this process
created or changed in the last :data:`RECENT_SECONDS` are answered from an
in-process record, so a modality's N-SET right after its N-CREATE is judged
against what it just sent.

Statuses (PS3.4 F.7.2.1.2, F.7.2.2.2, PS3.7 C): 0x0111 Duplicate SOP Instance,
0x0112 No Such Object Instance, 0x0110 Processing Failure once a step is
COMPLETED or DISCONTINUED ("may no longer be updated"), 0x0120 Missing
Attribute, 0x0121 Missing Attribute Value, 0x0106 Invalid Attribute Value,
0x0105 No Such Attribute for an attribute N-SET may not change.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from micropacs.bridge import LoopBridge
from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import DicomJson, element, first_text, text_of, to_json
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.dimse.access import NOT_AUTHORIZED, Permission, refused
from micropacs.errors import MicropacsError
from micropacs.events import (
    MPPS,
    WORKLIST,
    PerformedStepCreated,
    PerformedStepUpdated,
    WorklistItemStatus,
)
from micropacs.ports import EventBus, Worklist
from services.worklist.metrics import WorklistMetrics

log = logging.getLogger(__name__)

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.1)."""
RECENT_SECONDS = 600.0
"""How long this process remembers a step it created or changed (the index's lag)."""
RECENT_MAX = 10_000


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


class Refusal(Exception):
    """An MPPS request refused with ``status`` and an Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


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
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")


def _name(tag: str) -> str:
    return f"({tag[:4]},{tag[4:]})"


def _check_value(tag: str, key: DicomJson) -> None:
    for value in text_of(key, skip_blank=True):
        vr = key.get("vr")
        wrong = (
            (vr == "DA" and not _DATE.fullmatch(value.strip()))
            or (vr == "TM" and not _TIME.fullmatch(value.strip()))
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


def check_set(current: DicomJson, changes: DicomJson) -> DicomJson:
    """The step after ``changes``, or the refusal of Table F.7.2-1 (PS3.4 F.7.2.2)."""
    status = first_text(current, STATUS).strip()
    if status in model.FINAL_PERFORMED_STATUSES:
        raise Refusal(
            NStatus.PROCESSING_FAILURE,
            "Performed Procedure Step Object may no longer be updated",
        )
    for tag in changes:
        if tag in NOT_SETTABLE:
            raise Refusal(NStatus.NO_SUCH_ATTRIBUTE, f"{_name(tag)} may not be set by N-SET")
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
    return updated


@dataclass
class _Recent:
    dataset: DicomJson
    until: float


class PerformedSteps:
    """The MPPS SCP's logic: check, publish, answer (PS3.4 F.7.2)."""

    def __init__(
        self,
        bus: EventBus,
        worklist: Worklist,
        metrics: WorklistMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._worklist = worklist
        self._metrics = metrics
        self._clock = clock
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        # One request at a time: two N-SETs of one step must see each other.
        self._lock = asyncio.Lock()

    async def create(self, sop_instance_uid: str, attributes: DicomJson, calling_ae: str) -> None:
        """Accept an N-CREATE once its events are durable; :class:`Refusal` otherwise."""
        async with self._lock:
            try:
                if not is_valid_uid(sop_instance_uid):
                    raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, "invalid SOP Instance UID")
                check_create(attributes)
                if await self._current(sop_instance_uid) is not None:
                    raise Refusal(NStatus.DUPLICATE_SOP_INSTANCE, "this MPPS exists already")
                created = PerformedStepCreated(
                    sop_instance_uid=sop_instance_uid,
                    dataset=attributes,
                    calling_ae=calling_ae,
                    received_at=_now(),
                )
                await self._bus.publish(MPPS, created.key, created.to_bytes())
                await self._follow(attributes, model.STARTED)
            except Refusal as refusal:
                self._metrics.mpps.labels(outcome=f"0x{refusal.status:04X}").inc()
                raise
            self._remember(sop_instance_uid, attributes)
            self._metrics.mpps.labels(outcome="created").inc()

    async def update(self, sop_instance_uid: str, changes: DicomJson) -> DicomJson:
        """Accept an N-SET once its events are durable; returns the step as it now is."""
        async with self._lock:
            try:
                current = await self._current(sop_instance_uid)
                if current is None:
                    raise Refusal(NStatus.NO_SUCH_OBJECT_INSTANCE, "no such MPPS")
                updated = check_set(current, changes)
                event = PerformedStepUpdated(
                    sop_instance_uid=sop_instance_uid, changes=changes, received_at=_now()
                )
                await self._bus.publish(MPPS, event.key, event.to_bytes())
                status = first_text(updated, STATUS).strip()
                if status in model.FINAL_PERFORMED_STATUSES:
                    await self._follow(updated, status)
            except Refusal as refusal:
                self._metrics.mpps.labels(outcome=f"0x{refusal.status:04X}").inc()
                raise
            self._remember(sop_instance_uid, updated)
            self._metrics.mpps.labels(outcome=status.lower().replace(" ", "_")).inc()
            return updated

    async def _current(self, sop_instance_uid: str) -> DicomJson | None:
        self._forget_old()
        recent = self._recent.get(sop_instance_uid)
        if recent is not None:
            return recent.dataset
        stored = await self._worklist.step(sop_instance_uid)
        return None if stored is None else stored.dataset

    def _remember(self, sop_instance_uid: str, dataset: DicomJson) -> None:
        self._recent.pop(sop_instance_uid, None)
        self._recent[sop_instance_uid] = _Recent(dataset, self._clock() + RECENT_SECONDS)
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _forget_old(self) -> None:
        now = self._clock()
        while self._recent:
            uid, oldest = next(iter(self._recent.items()))
            if oldest.until > now:
                return
            del self._recent[uid]

    async def _follow(self, step: DicomJson, status: str) -> None:
        """The referenced worklist items take the performed step's status (IHE RAD TF-2
        4.6/4.7: STARTED, COMPLETED, DISCONTINUED)."""
        for item_id in await self._referenced_items(step):
            event = WorklistItemStatus(item_id=item_id, status=status, source="mpps")
            await self._bus.publish(WORKLIST, event.key, event.to_bytes())

    async def _referenced_items(self, step: DicomJson) -> list[str]:
        found: list[str] = []
        for ssa in step.get(SSA, {}).get("Value") or []:
            step_id = first_text(ssa, model.SCHEDULED_STEP_ID).strip()
            study = first_text(ssa, tags.STUDY_INSTANCE_UID).strip()
            if not step_id:
                continue  # an unscheduled procedure (IHE RAD TF-2 4.6.4.1.2.4)
            identifier: DicomJson = {
                model.SCHEDULED_PROCEDURE_STEP_SEQUENCE: {
                    "vr": "SQ",
                    "Value": [{model.SCHEDULED_STEP_ID: element("SH", step_id)}],
                }
            }
            if study:
                identifier[tags.STUDY_INSTANCE_UID] = element("UI", study)
            found += [item.item_id async for item in self._worklist.find_items(identifier)]
        return found


def _now() -> str:
    return datetime.now(UTC).isoformat()


# -- DIMSE ---------------------------------------------------------------------------------


def add_contexts(ae: AE) -> None:
    """Accept the MPPS SOP Class (PS3.4 F.7.1)."""
    ae.add_supported_context(MPPS_SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def _status(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _decode(ds: Dataset) -> DicomJson:
    try:
        return to_json(ds)
    except Exception as exc:
        raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, "the attributes cannot be decoded") from exc


def _failure(exc: MicropacsError, operation: str) -> Dataset:
    log.warning("MPPS request failed", extra={"operation": operation, "reason": str(exc)})
    status = NStatus.RESOURCE_LIMITATION if exc.retryable else NStatus.PROCESSING_FAILURE
    return _status(status, "the worklist service cannot record this now")


def handle_create(
    event: evt.Event, service: PerformedSteps, bridge: LoopBridge
) -> tuple[int | Dataset, Dataset | None]:
    """N-CREATE of an MPPS (PS3.4 F.7.2.1); 0x0124 for a node that may not store."""
    if refused(event, Permission.STORE, "N-CREATE"):
        return NOT_AUTHORIZED, None
    given = getattr(event.request, "AffectedSOPInstanceUID", None)
    uid = str(given) if given else generate_uid()
    try:
        attributes = _decode(event.attribute_list)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        bridge.run(service.create(uid, attributes, calling_ae))
    except Refusal as refusal:
        log.warning("MPPS N-CREATE refused", extra={"status": f"0x{refusal.status:04X}"})
        return _status(refusal.status, refusal.comment), None
    except MicropacsError as exc:
        return _failure(exc, "N-CREATE"), None
    if given:
        return NStatus.SUCCESS, None
    answer = Dataset()
    answer.AffectedSOPInstanceUID = uid  # PS3.7 10.1.5.1.4: chosen by the SCP
    return NStatus.SUCCESS, answer


def handle_set(
    event: evt.Event, service: PerformedSteps, bridge: LoopBridge
) -> tuple[int | Dataset, Dataset | None]:
    """N-SET of an MPPS (PS3.4 F.7.2.2); 0x0124 for a node that may not store."""
    if refused(event, Permission.STORE, "N-SET"):
        return NOT_AUTHORIZED, None
    try:
        changes = _decode(event.modification_list)
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", None) or "")
        bridge.run(service.update(uid, changes))
    except Refusal as refusal:
        log.warning("MPPS N-SET refused", extra={"status": f"0x{refusal.status:04X}"})
        return _status(refusal.status, refusal.comment), None
    except MicropacsError as exc:
        return _failure(exc, "N-SET"), None
    return NStatus.SUCCESS, None
