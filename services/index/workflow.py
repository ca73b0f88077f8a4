"""The index's workflow consumers: worklist, MPPS and patient events into the Worklist store.

One consumer per topic (``worklist``, ``mpps``, ``patient``) in the index's
group, with the loop, retries and dead letters of :mod:`services.index.consuming`:
a batch's events are applied in order (a key's events are ordered on its
partition), then committed. Replaying any suffix of a topic leaves the store
as once:

* ``worklist.item.put`` / ``.status`` / ``.removed``: put, set status, remove.
* ``mpps.created`` (PS3.4 F.7.2.1): the performed step, IN PROGRESS, unless it
  is already stored (the SCP refuses a second N-CREATE, 0x0111, so a stored
  one is a replay); each scheduled step its ScheduledStepAttributesSequence
  names (:func:`~micropacs.dicom.worklist.scheduled_references`: by its step
  ID, so an unscheduled step moves none) becomes STARTED while the performed
  step is in progress. The index is the only writer of that status.
* ``mpps.updated`` (F.7.2.2): the changes replace the stored attributes (a
  sequence replaced whole); once the step is COMPLETED or DISCONTINUED an
  update is ignored, except that the final status is passed on again to the
  scheduled steps (a crash may have come in between).
* ``patient.updated``: the RIS's demographics (the attributes it sent replace,
  the others stay; a merge, once recorded, stays), in the patients table, in
  the patient's worklist items (IHE RAD TF-2 RAD-12) and in the catalog, whose
  answers and retrievals then carry them (:meth:`~micropacs.ports.Catalog.update_patient`).
* ``patient.merged``: the prior patient records whom it was merged into; its
  worklist items take the survivor's identity and known demographics; in the
  catalog its studies move to the survivor (:meth:`~micropacs.ports.Catalog.merge_patient`).

The patient topic and ``instance.stored`` are consumed side by side, so an
object may be indexed before or after a change of its patient: the catalog
keeps the change and files objects that come later by it, so either order
ends the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from micropacs.config import IndexSettings
from micropacs.dicom import tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson, element, first_text
from micropacs.errors import InvalidInput, MicropacsError, is_retryable
from micropacs.events import (
    MPPS,
    PATIENT,
    WORKLIST,
    PatientMerged,
    PatientUpdated,
    PerformedStepCreated,
    PerformedStepUpdated,
    WorkflowEvent,
    WorklistItemPut,
    WorklistItemRemoved,
    WorklistItemStatus,
    decode_workflow_event,
    patient_key,
)
from micropacs.ports import (
    Catalog,
    EventBus,
    PatientDemographics,
    PerformedStep,
    Record,
    Worklist,
    WorklistItem,
)
from micropacs.service import BackgroundTask
from services.index.consuming import Consuming
from services.index.metrics import IndexMetrics

T = TypeVar("T")

log = logging.getLogger(__name__)

TOPICS = (WORKLIST, MPPS, PATIENT)
"""The topics this module consumes, one consumer each."""


def merged(dataset: DicomJson, changes: DicomJson) -> DicomJson:
    """``dataset`` with the attributes of an N-SET replaced (PS3.4 F.7.2.2, sequences whole)."""
    return {**dataset, **changes}


def performed_status(dataset: DicomJson) -> str:
    """The Performed Procedure Step Status of an MPPS dataset."""
    return first_text(dataset, wl.PERFORMED_STEP_STATUS).strip()


class WorkflowApplier:
    """Applies the worklist, MPPS and patient topics to the Worklist store."""

    def __init__(
        self,
        bus: EventBus,
        worklist: Worklist,
        metrics: IndexMetrics,
        settings: IndexSettings,
        catalog: Catalog | None = None,
    ) -> None:
        self._worklist = worklist
        self._catalog = catalog
        self._metrics = metrics
        self._consuming = {topic: Consuming(bus, topic, metrics, settings) for topic in TOPICS}

    def tasks(self) -> list[BackgroundTask]:
        """One consumer loop per topic, for the service's background tasks."""
        return [self._runner(topic) for topic in TOPICS]

    def _runner(self, topic: str) -> BackgroundTask:
        async def run(stop: asyncio.Event) -> None:
            await self._consuming[topic].run(self.process, stop)

        return run

    async def process(self, records: Sequence[Record], stop: asyncio.Event | None = None) -> None:
        """Apply a batch of records in order (dead-lettering what cannot be applied)."""
        started = time.perf_counter()
        for record in records:
            consuming = self._consuming.get(record.topic) or self._consuming[WORKLIST]
            try:
                event = decode_workflow_event(record.value)
                await self._apply(event, consuming, stop)
            except MicropacsError as exc:
                if is_retryable(exc):  # stopped while a store is down: not applied
                    raise
                await consuming.dead_letter(record, str(exc))
                continue
            self._metrics.workflow_events.labels(type=event.type).inc()
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _apply(
        self, event: WorkflowEvent, consuming: Consuming, stop: asyncio.Event | None
    ) -> None:
        write = _Retried(consuming, stop)
        store = self._worklist
        if isinstance(event, WorklistItemPut):
            item = await self._kept_progress(WorklistItem(event.item_id, event.dataset), write)
            await write(lambda: store.put_item(item))
        elif isinstance(event, WorklistItemStatus):
            if not await write(lambda: store.set_item_status(event.item_id, event.status)):
                log.info("status of an unknown worklist item ignored", extra={"type": event.type})
        elif isinstance(event, WorklistItemRemoved):
            await write(lambda: store.remove_item(event.item_id))
        elif isinstance(event, PerformedStepCreated):
            await self._created(event, write)
        elif isinstance(event, PerformedStepUpdated):
            await self._updated(event, write)
        elif isinstance(event, PatientUpdated):
            await self._patient_updated(event, write)
        else:
            await self._patient_merged(event, write)

    async def _kept_progress(self, item: WorklistItem, write: _Retried) -> WorklistItem:
        """The item, keeping the status of the stored one where that has gone further.

        The worklist and MPPS topics are consumed side by side: an order's change
        (HL7 XO) replayed after its MPPS moved the step on must not set it back.
        """
        store = self._worklist
        stored = await write(lambda: store.item(item.item_id))
        if stored is None:
            return item
        kept = wl.keys_of(stored.dataset).status
        if wl.progress(kept) <= wl.progress(wl.keys_of(item.dataset).status):
            return item
        return WorklistItem(item.item_id, wl.with_status(item.dataset, kept), item.updated_at)

    async def _created(self, event: PerformedStepCreated, write: _Retried) -> None:
        store = self._worklist
        step = await write(lambda: store.step(event.sop_instance_uid))
        if step is None:
            step = PerformedStep(
                event.sop_instance_uid,
                event.dataset,
                event.calling_ae,
                created_at=event.received_at,
                updated_at=event.received_at,
            )
            created = step
            await write(lambda: store.put_step(created))
        if performed_status(step.dataset) == wl.IN_PROGRESS:
            await self._set_scheduled(step.dataset, wl.STARTED, write)

    async def _updated(self, event: PerformedStepUpdated, write: _Retried) -> None:
        store = self._worklist
        step = await write(lambda: store.step(event.sop_instance_uid))
        if step is None:
            # The SCP refuses an N-SET of an unknown instance (0x0112): its N-CREATE is lost.
            raise InvalidInput("an MPPS update of a performed step that was never created")
        status = performed_status(step.dataset)
        if status in wl.FINAL_PERFORMED_STATUSES:
            if performed_status(event.changes) == status:
                await self._set_scheduled(step.dataset, status, write)
            return
        dataset = merged(step.dataset, event.changes)
        updated = PerformedStep(
            step.sop_instance_uid, dataset, step.calling_ae, step.created_at, event.received_at
        )
        await write(lambda: store.put_step(updated))
        status = performed_status(dataset)
        if status in wl.FINAL_PERFORMED_STATUSES:
            await self._set_scheduled(dataset, status, write)

    async def _set_scheduled(self, performed: DicomJson, status: str, write: _Retried) -> None:
        """Set ``status`` on every worklist item the performed step references."""
        store = self._worklist
        for identifier in wl.scheduled_references(performed):
            items = await write(partial(_ids, store, identifier))
            for item_id in items:
                await write(partial(store.set_item_status, item_id, status))

    async def _patient_updated(self, event: PatientUpdated, write: _Retried) -> None:
        store = self._worklist
        patient_id, issuer = event.patient_id, event.issuer_of_patient_id
        previous = await write(lambda: store.patient(patient_id, issuer))
        patient = PatientDemographics(
            patient_id,
            issuer,
            {**(previous.dataset if previous is not None else {}), **event.attributes},
            merged_into=previous.merged_into if previous is not None else "",
        )
        await write(lambda: store.put_patient(patient))
        await self._update_items(
            patient_id, issuer, {**event.attributes, **_identity(patient_id, issuer)}, write
        )
        catalog = self._catalog
        if catalog is not None:
            await write(lambda: catalog.update_patient(patient_id, issuer, event.attributes))

    async def _patient_merged(self, event: PatientMerged, write: _Retried) -> None:
        store = self._worklist
        prior_id, prior_issuer = event.prior_patient_id, event.prior_issuer_of_patient_id
        into_id, into_issuer = event.patient_id, event.issuer_of_patient_id
        found = await write(lambda: store.patient(prior_id, prior_issuer))
        dataset = found.dataset if found is not None else _identity(prior_id, prior_issuer)
        prior = PatientDemographics(
            prior_id, prior_issuer, dataset, merged_into=patient_key(into_id, into_issuer)
        )
        await write(lambda: store.put_patient(prior))
        survivor = await write(lambda: store.patient(into_id, into_issuer))
        attributes = survivor.dataset if survivor is not None else {}
        identity = _identity(into_id, into_issuer)
        await self._update_items(prior_id, prior_issuer, {**attributes, **identity}, write)
        catalog = self._catalog
        if catalog is not None:
            await write(lambda: catalog.merge_patient(prior_id, prior_issuer, into_id, into_issuer))

    async def _update_items(
        self, patient_id: str, issuer: str, attributes: DicomJson, write: _Retried
    ) -> None:
        """Put the patient's worklist items back with ``attributes`` (IHE RAD TF-2 RAD-12:
        the worklist a modality reads carries the RIS's current patient).

        A present attribute replaces the item's (an empty one empties it), an
        absent one is kept; without an issuer in the new identity the item has none.
        Applied again it writes the same items, so a replay changes nothing.
        """
        store = self._worklist
        identifier = _identity(patient_id, issuer)
        new_issuer = first_text(attributes, tags.ISSUER_OF_PATIENT_ID).strip()
        items = await write(partial(_items, store, identifier))
        for item in items:
            if wl.keys_of(item.dataset).issuer_of_patient_id.strip() != issuer:
                continue  # the same Patient ID issued by another authority
            dataset = {**item.dataset, **attributes}
            if not new_issuer and first_text(dataset, tags.ISSUER_OF_PATIENT_ID).strip():
                dataset.pop(tags.ISSUER_OF_PATIENT_ID, None)  # merged into an issuer-less ID
            if dataset == item.dataset:
                continue
            updated = WorklistItem(item.item_id, dataset, item.updated_at)
            await write(partial(store.put_item, updated))


class _Retried:
    """Runs one store operation with the consumer's retries (until ``stop``)."""

    def __init__(self, consuming: Consuming, stop: asyncio.Event | None) -> None:
        self._consuming = consuming
        self._stop = stop

    async def __call__(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await self._consuming.retrying(operation, self._stop, "worklist write")


async def _ids(store: Worklist, identifier: DicomJson) -> list[str]:
    return [item.item_id for item in await _items(store, identifier)]


async def _items(store: Worklist, identifier: DicomJson) -> list[WorklistItem]:
    return [item async for item in store.find_items(identifier)]


def _identity(patient_id: str, issuer_of_patient_id: str) -> DicomJson:
    identity: DicomJson = {tags.PATIENT_ID: element("LO", patient_id)}
    if issuer_of_patient_id:
        identity[tags.ISSUER_OF_PATIENT_ID] = element("LO", issuer_of_patient_id)
    return identity
