"""Modality Performed Procedure Step SCP (PS3.4 F.7: the MPPS SOP Class).

:class:`PerformedSteps` checks an N-CREATE (F.7.2.1) or N-SET (F.7.2.2)
against Table F.7.2-1 (:mod:`services.worklist.mpps_checks`), publishes what
it accepted (``mpps.created``, ``mpps.updated``) and only then answers
Success: an acknowledged MPPS is on the event bus. The index writes the
Worklist store from those events, and moves the referenced worklist items'
status (it alone: :func:`~micropacs.dicom.worklist.scheduled_references`).
A request first waits at the read barrier until the index has applied the
step's acknowledged events, so a modality's N-SET right after its N-CREATE
is judged against what it just sent, whichever process answered it; if the
barrier times out (the index down or far behind), the steps this process
created or changed in the last :data:`RECENT_SECONDS` are answered from an
in-process record.

An N-CREATE re-sent with the same attributes (a modality retrying after a
lost answer) is answered Success again; another N-CREATE of an existing
instance 0x0111 Duplicate SOP Instance. An N-SET of an unknown instance is
0x0112 No Such Object Instance; the other refusals are those of Table F.7.2-1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from weakref import WeakValueDictionary

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from micropacs.bridge import LoopBridge
from micropacs.dicom.json_model import DicomJson, first_text, to_json
from micropacs.dicom.uids import is_valid_uid
from micropacs.dimse.access import NOT_AUTHORIZED, Permission, refused
from micropacs.errors import MicropacsError
from micropacs.events import MPPS, PerformedStepCreated, PerformedStepUpdated
from micropacs.ports import EventBus, Worklist
from micropacs.read_barrier import ReadBarrier
from services.worklist.failures import failure
from services.worklist.metrics import WorklistMetrics
from services.worklist.mpps_checks import STATUS, NStatus, Refusal, check_create, check_set
from services.worklist.read_scope import READER, step_scope

log = logging.getLogger(__name__)

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.1)."""
RECENT_SECONDS = 600.0
"""How long this process remembers a step it created or changed (the index's lag)."""
RECENT_MAX = 10_000


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
        barrier: ReadBarrier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._worklist = worklist
        self._metrics = metrics
        self._barrier = barrier
        self._clock = clock
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        # One request per step at a time: two N-SETs of one step must see each other,
        # while the steps of other modalities do not queue behind its read barrier.
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def create(self, sop_instance_uid: str, attributes: DicomJson, calling_ae: str) -> None:
        """Accept an N-CREATE once its event is durable; :class:`Refusal` otherwise.

        The same N-CREATE again (same instance, same attributes) is accepted
        without a second event: its first answer may have been lost.
        """
        async with self._lock_of(sop_instance_uid):
            try:
                if not is_valid_uid(sop_instance_uid):
                    raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, "invalid SOP Instance UID")
                check_create(attributes)
                current = await self._current(sop_instance_uid)
                if current is not None and current != attributes:
                    raise Refusal(NStatus.DUPLICATE_SOP_INSTANCE, "this MPPS exists already")
                if current is None:
                    created = PerformedStepCreated(
                        sop_instance_uid=sop_instance_uid,
                        dataset=attributes,
                        calling_ae=calling_ae,
                        received_at=_now(),
                    )
                    await self._bus.publish(MPPS, created.key, created.to_bytes())
                    self._remember(sop_instance_uid, attributes)
            except Refusal as refusal:
                self._metrics.mpps.labels(outcome=f"0x{refusal.status:04X}").inc()
                raise
            self._metrics.mpps.labels(outcome="created").inc()

    async def update(self, sop_instance_uid: str, changes: DicomJson) -> DicomJson:
        """Accept an N-SET once its event is durable; returns the step as it now is."""
        async with self._lock_of(sop_instance_uid):
            try:
                current = await self._current(sop_instance_uid)
                if current is None:
                    raise Refusal(NStatus.NO_SUCH_OBJECT_INSTANCE, "no such MPPS")
                changes, updated = check_set(current, changes)
                event = PerformedStepUpdated(
                    sop_instance_uid=sop_instance_uid, changes=changes, received_at=_now()
                )
                await self._bus.publish(MPPS, event.key, event.to_bytes())
                self._remember(sop_instance_uid, updated)
            except Refusal as refusal:
                self._metrics.mpps.labels(outcome=f"0x{refusal.status:04X}").inc()
                raise
            status = first_text(updated, STATUS).strip()
            self._metrics.mpps.labels(outcome=status.lower().replace(" ", "_")).inc()
            return updated

    def _lock_of(self, sop_instance_uid: str) -> asyncio.Lock:
        lock = self._locks.get(sop_instance_uid)
        if lock is None:
            lock = self._locks[sop_instance_uid] = asyncio.Lock()
        return lock

    async def _current(self, sop_instance_uid: str) -> DicomJson | None:
        self._forget_old()
        scope = step_scope(sop_instance_uid)
        if self._barrier is None or not await self._barrier.wait(READER, scope):
            recent = self._recent.get(sop_instance_uid)
            if recent is not None:  # newer than the store, the index being behind
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


def _now() -> str:
    return datetime.now(UTC).isoformat()


# -- DIMSE ---------------------------------------------------------------------------------


def add_contexts(ae: AE) -> None:
    """Accept the MPPS SOP Class (PS3.4 F.7.1)."""
    ae.add_supported_context(MPPS_SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def _decode(ds: Dataset) -> DicomJson:
    try:
        return to_json(ds)
    except Exception as exc:
        raise Refusal(NStatus.INVALID_ATTRIBUTE_VALUE, "the attributes cannot be decoded") from exc


def _failure(exc: MicropacsError, operation: str) -> Dataset:
    log.warning("MPPS request failed", extra={"operation": operation, "reason": str(exc)})
    status = NStatus.RESOURCE_LIMITATION if exc.retryable else NStatus.PROCESSING_FAILURE
    return failure(status, "the worklist service cannot record this now")


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
        return failure(refusal.status, refusal.comment, error_id=refusal.error_id), None
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
        return failure(refusal.status, refusal.comment, error_id=refusal.error_id), None
    except MicropacsError as exc:
        return _failure(exc, "N-SET"), None
    return NStatus.SUCCESS, None
