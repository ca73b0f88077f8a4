"""The index applying worklist, MPPS and patient events (services/index/workflow.py).

The index is built with its ``build(...)`` over the real embedded event log,
catalog and worklist store, its consumers run as tasks, events are published
on the bus as the worklist service publishes them, and the store is read once
the index has applied them (each phase waits for every event it published:
the three topics are consumed side by side, as in production).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_catalog, open_event_bus, open_worklist
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson
from micropacs.events import (
    DEAD_LETTER,
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
)
from micropacs.ports import Catalog, EventBus, Record, Worklist
from services.index.app import build
from services.index.workflow import TOPICS
from tests.service.conftest import service_settings

ROOT = "1.2.826.0.1.3680043.10.543.11"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ISSUER = "00100021"
ACCESSION = "00080050"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
REQUESTED_PROCEDURE_ID = "00401001"
SPS = "00400100"
STATION_AE = "00400001"
STEP_ID = "00400009"
STEP_STATUS = "00400020"
SSA = "00400270"
PPS_STATUS = "00400252"
PERFORMED_SERIES = "00400340"
BIRTH_DATE = "00100030"
SEX = "00100040"
GROUP = "index"
PPS_UID = f"{ROOT}.100"
SETTLE_TIMEOUT = 15.0
"""Seconds the index may take to apply what a phase published."""


def el(vr: str, *values: Any) -> DicomJson:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(name: str) -> DicomJson:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def order(
    number: int, patient_id: str = "P1", issuer: str = "H", name: str = "Dvořák^Jan"
) -> WorklistItemPut:
    dataset = {
        PATIENT_ID: el("LO", patient_id),
        ISSUER: el("LO", issuer),
        PATIENT_NAME: pn(name),
        ACCESSION: el("SH", f"A{number}"),
        REQUESTED_PROCEDURE_ID: el("SH", f"RP{number}"),
        STUDY_UID: el("UI", f"{ROOT}.{number}"),
        SPS: el(
            "SQ",
            {
                STATION_AE: el("AE", "CT1"),
                STEP_ID: el("SH", f"S{number}"),
                STEP_STATUS: el("CS", "SCHEDULED"),
            },
        ),
    }
    return WorklistItemPut(item_id=f"order-{number}", dataset=dataset, source="api")


def series(*numbers: int) -> DicomJson:
    return el("SQ", *({SERIES_UID: el("UI", f"{PPS_UID}.{n}")} for n in numbers))


CREATED = PerformedStepCreated(
    sop_instance_uid=PPS_UID,
    dataset={
        PPS_STATUS: el("CS", "IN PROGRESS"),
        PATIENT_ID: el("LO", "P1"),
        SSA: el(
            "SQ",
            {
                STUDY_UID: el("UI", f"{ROOT}.1"),
                ACCESSION: el("SH", "A1"),
                REQUESTED_PROCEDURE_ID: el("SH", "RP1"),
                STEP_ID: el("SH", "S1"),
            },
        ),
    },
    calling_ae="CT1",
    received_at="2026-03-10T08:00:00+00:00",
)
ATTRIBUTES_SET = PerformedStepUpdated(
    sop_instance_uid=PPS_UID, changes={PERFORMED_SERIES: series(1)}, received_at="2026-03-10T08:10"
)
COMPLETED = PerformedStepUpdated(
    sop_instance_uid=PPS_UID,
    changes={PPS_STATUS: el("CS", "COMPLETED"), PERFORMED_SERIES: series(1, 2)},
    received_at="2026-03-10T08:20",
)
AFTER_COMPLETION = PerformedStepUpdated(
    sop_instance_uid=PPS_UID, changes={PPS_STATUS: el("CS", "DISCONTINUED")}, received_at="x"
)

PHASES: tuple[tuple[WorkflowEvent, ...], ...] = (
    (order(1), order(2), order(3)),
    (CREATED,),
    (ATTRIBUTES_SET, COMPLETED, AFTER_COMPLETION),
    (
        WorklistItemStatus(item_id="order-2", status="DISCONTINUED", source="hl7"),
        WorklistItemRemoved(item_id="order-3", source="api"),
        WorklistItemStatus(item_id="order-none", status="CANCELED", source="hl7"),
    ),
    (
        PatientUpdated(patient_id="P1", issuer_of_patient_id="H", attributes={}),
        PatientUpdated(
            patient_id="P2", issuer_of_patient_id="H", attributes={PATIENT_NAME: pn("Old^Name")}
        ),
        PatientMerged(
            patient_id="P1",
            issuer_of_patient_id="H",
            prior_patient_id="P2",
            prior_issuer_of_patient_id="H",
        ),
        PatientMerged(
            patient_id="P1",
            issuer_of_patient_id="H",
            prior_patient_id="P9",
            prior_issuer_of_patient_id="",
        ),
    ),
    (
        PatientUpdated(
            patient_id="P2", issuer_of_patient_id="H", attributes={PATIENT_NAME: pn("Nový^Jméno")}
        ),
    ),
)
TOPIC_OF = {
    WorklistItemPut: WORKLIST,
    WorklistItemStatus: WORKLIST,
    WorklistItemRemoved: WORKLIST,
    PerformedStepCreated: MPPS,
    PerformedStepUpdated: MPPS,
    PatientUpdated: PATIENT,
    PatientMerged: PATIENT,
}


@dataclass
class Snapshot:
    """What a test reads of the store: items, the performed step, the patients."""

    items: dict[str, tuple[str, DicomJson]]
    step: tuple[Any, ...] | None
    patients: dict[str, tuple[DicomJson, str] | None]


class Index:
    """The index service over embedded adapters under ``data_dir``, its consumers running."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = service_settings(data_dir)
        self.registry = CollectorRegistry()
        self.published = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Index:
        self.bus: EventBus = await open_event_bus(self.settings.bus_url)
        self.catalog: Catalog = await open_catalog(self.settings.catalog_url)
        self.worklist: Worklist = await open_worklist(self.settings.worklist_url)
        app = build(self.settings, self.bus, self.catalog, self.registry, self.worklist)
        self._tasks = [asyncio.create_task(task(self._stop)) for task in app.background()]
        assert len(self._tasks) == 2 + len(TOPICS)  # indexer, audit records, a task per topic
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for adapter in (self.worklist, self.catalog, self.bus):
                await adapter.close()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.bus.publish(topic, key, value)
        self.published += 1

    async def publish_events(self, events: Sequence[WorkflowEvent]) -> None:
        for event in events:
            await self.publish(TOPIC_OF[type(event)], event.key, event.to_bytes())

    def metric(self, name: str) -> float:
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        )

    async def settle(self) -> None:
        """Wait until every published event was applied or dead-lettered."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            for task in self._tasks:
                if task.done():
                    raise AssertionError("a consumer died") from task.exception()
            done = self.metric("micropacs_index_workflow_events_total") + self.metric(
                "micropacs_index_dead_letters_total"
            )
            if done >= self.published:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{done} of {self.published} events applied")
            await asyncio.sleep(0.02)

    async def snapshot(self) -> Snapshot:
        items = {
            item.item_id: (wl.keys_of(item.dataset).status, item.dataset)
            async for item in self.worklist.find_items({})
        }
        step = await self.worklist.step(PPS_UID)
        patients = {}
        for patient_id, issuer in (("P1", "H"), ("P2", "H"), ("P9", "")):
            found = await self.worklist.patient(patient_id, issuer)
            patients[patient_id] = None if found is None else (found.dataset, found.merged_into)
        return Snapshot(
            items=items,
            step=None
            if step is None
            else (step.dataset, step.calling_ae, step.created_at, step.updated_at),
            patients=patients,
        )

    async def dead_letters(self) -> list[Record]:
        consumer = await self.bus.consumer(DEAD_LETTER, f"probe-{uuid.uuid4().hex[:8]}")
        try:
            return await consumer.poll(100, 0)
        finally:
            await consumer.close()


def test_events_are_applied_to_the_worklist_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Index(tmp_path / "data") as index:
            await index.publish_events(PHASES[0])
            await index.settle()
            await index.publish_events(PHASES[1])
            await index.settle()
            started = await index.snapshot()
            assert {k: v[0] for k, v in started.items.items()} == {
                "order-1": "STARTED",
                "order-2": "SCHEDULED",
                "order-3": "SCHEDULED",
            }
            assert started.step is not None
            assert started.step[0] == CREATED.dataset
            for phase in PHASES[2:]:
                await index.publish_events(phase)
                await index.settle()
            final = await index.snapshot()
            assert await index.dead_letters() == []
            assert index.metric("micropacs_index_workflow_events_total") == index.published

        assert {k: v[0] for k, v in final.items.items()} == {
            "order-1": "COMPLETED",
            "order-2": "DISCONTINUED",
        }
        assert final.items["order-1"][1][PATIENT_NAME] == pn("Dvořák^Jan")
        assert final.step is not None
        dataset, calling_ae, created_at, updated_at = final.step
        assert dataset[PPS_STATUS] == el("CS", "COMPLETED")  # the change after it ignored
        assert dataset[PERFORMED_SERIES] == series(1, 2)  # a sequence is replaced whole
        assert dataset[SSA] == CREATED.dataset[SSA]
        assert (calling_ae, created_at, updated_at) == (
            "CT1",
            CREATED.received_at,
            "2026-03-10T08:20",
        )
        assert final.patients["P1"] == ({}, "")
        # Updated after the merge: the demographics change, the merge stays.
        assert final.patients["P2"] == ({PATIENT_NAME: pn("Nový^Jméno")}, "H|P1")
        assert final.patients["P9"] == ({PATIENT_ID: el("LO", "P9")}, "H|P1")

    asyncio.run(scenario())


async def _run(data_dir: Path, phases: Sequence[Sequence[WorkflowEvent]]) -> Snapshot:
    async with Index(data_dir) as index:
        for phase in phases:
            await index.publish_events(phase)
            await index.settle()
        return await index.snapshot()


@pytest.mark.parametrize("replay", ["each-event-twice", "each-phase-twice"])
def test_replayed_events_leave_the_store_as_once(tmp_path: Path, replay: str) -> None:
    if replay == "each-event-twice":
        replayed = [tuple(e for event in phase for e in (event, event)) for phase in PHASES]
    else:
        replayed = [phase + phase for phase in PHASES]
    once = asyncio.run(_run(tmp_path / "once", PHASES))
    twice = asyncio.run(_run(tmp_path / "twice", replayed))
    assert twice == once


def test_poison_events_go_to_dead_letters_and_the_next_ones_are_applied(tmp_path: Path) -> None:
    unknown_type = json.dumps({"type": "worklist.item.frobbed", "version": 1}).encode()
    unknown_version = json.dumps({**json.loads(order(7).to_bytes()), "version": 9}).encode()
    never_created = PerformedStepUpdated(
        sop_instance_uid=f"{ROOT}.404", changes={}, received_at="t"
    )
    poisons = [
        (MPPS, "poison-1", b"\xff not json"),
        (WORKLIST, "poison-2", unknown_type),
        (WORKLIST, "poison-3", unknown_version),
        (MPPS, never_created.key, never_created.to_bytes()),
        (PATIENT, "poison-5", b"[]"),
    ]

    async def scenario() -> tuple[list[Record], Snapshot]:
        async with Index(tmp_path / "data") as index:
            for topic, key, value in poisons:
                await index.publish(topic, key, value)
            await index.publish_events([order(1), CREATED])
            await index.settle()
            assert index.metric("micropacs_index_dead_letters_total") == len(poisons)
            return await index.dead_letters(), await index.snapshot()

    letters, snapshot = asyncio.run(scenario())
    assert snapshot.items["order-1"][0] in ("SCHEDULED", "STARTED")  # the topics race here
    assert snapshot.step is not None
    bodies = sorted((json.loads(letter.value) for letter in letters), key=lambda b: b["key"])
    expected = sorted(poisons, key=lambda p: p[1])
    assert [(b["source_topic"], b["key"]) for b in bodies] == [(t, k) for t, k, _ in expected]
    assert [base64.b64decode(b["payload_base64"]) for b in bodies] == [v for _, _, v in expected]
    assert {b["consumer_group"] for b in bodies} == {GROUP}
    assert all(b["reason"] for b in bodies)


def test_an_order_change_after_its_step_started_keeps_the_step_started(tmp_path: Path) -> None:
    # An HL7 XO (or a replay of the NW) applied after the MPPS moved the step on.
    phases: list[tuple[WorkflowEvent, ...]] = [(order(1),), (CREATED,), (order(1),)]
    started = asyncio.run(_run(tmp_path / "data", phases))
    assert started.items["order-1"][0] == "STARTED"
    assert started.items["order-1"][1][ACCESSION] == el("SH", "A1")


def test_an_unscheduled_performed_step_changes_no_worklist_item(tmp_path: Path) -> None:
    # IHE RAD TF-2 4.6.4.1.2.4: its Scheduled Step Attributes name the study, no step.
    unscheduled = {**CREATED.dataset[SSA]["Value"][0]}
    del unscheduled[STEP_ID]
    created = PerformedStepCreated(
        sop_instance_uid=PPS_UID,
        dataset={**CREATED.dataset, SSA: el("SQ", unscheduled)},
        calling_ae="CT1",
        received_at=CREATED.received_at,
    )
    phases: list[tuple[WorkflowEvent, ...]] = [(order(1), order(2)), (created,), (COMPLETED,)]
    final = asyncio.run(_run(tmp_path / "data", phases))
    assert final.step is not None
    assert final.step[0][PPS_STATUS] == el("CS", "COMPLETED")
    assert {k: v[0] for k, v in final.items.items()} == {
        "order-1": "SCHEDULED",
        "order-2": "SCHEDULED",
    }


PATIENT_PHASES: tuple[tuple[WorkflowEvent, ...], ...] = (
    (order(1), order(2, "P2", name="Old^Name"), order(3, "P2", "X", name="Other^Issuer")),
    (
        PatientUpdated(
            patient_id="P1",
            issuer_of_patient_id="H",
            attributes={PATIENT_NAME: pn("Dvořáková^Jana"), SEX: el("CS", "F")},
        ),
        # An A08 naming only what changed (absent: unchanged, empty: removed).
        PatientUpdated(
            patient_id="P2",
            issuer_of_patient_id="H",
            attributes={PATIENT_NAME: pn("Nový^Jméno"), BIRTH_DATE: el("DA")},
        ),
    ),
)
MERGE_PHASE: tuple[WorkflowEvent, ...] = (
    PatientMerged(
        patient_id="P1",
        issuer_of_patient_id="H",
        prior_patient_id="P2",
        prior_issuer_of_patient_id="H",
    ),
)


def test_patient_updates_and_merges_reach_the_worklist_items(tmp_path: Path) -> None:
    # IHE RAD TF-2 RAD-12: the worklist a modality reads carries the RIS's patient.
    updated = asyncio.run(_run(tmp_path / "updated", PATIENT_PHASES))
    first, second, other = (updated.items[f"order-{n}"][1] for n in (1, 2, 3))
    assert (first[PATIENT_NAME], first[SEX]) == (pn("Dvořáková^Jana"), el("CS", "F"))
    assert first[ACCESSION] == el("SH", "A1")  # the rest of the order as it was
    assert (second[PATIENT_NAME], second[BIRTH_DATE]) == (pn("Nový^Jméno"), el("DA"))
    assert second[PATIENT_ID] == el("LO", "P2")
    assert other == order(3, "P2", "X", name="Other^Issuer").dataset  # another authority's P2

    merged = asyncio.run(_run(tmp_path / "merged", (*PATIENT_PHASES, MERGE_PHASE)))
    second = merged.items["order-2"][1]
    assert (second[PATIENT_ID], second[ISSUER]) == (el("LO", "P1"), el("LO", "H"))
    assert (second[PATIENT_NAME], second[SEX]) == (pn("Dvořáková^Jana"), el("CS", "F"))
    assert second[REQUESTED_PROCEDURE_ID] == el("SH", "RP2")
    assert merged.items["order-3"][1][PATIENT_ID] == el("LO", "P2")


def test_patient_events_replayed_leave_the_worklist_items_as_once(tmp_path: Path) -> None:
    phases = (*PATIENT_PHASES, MERGE_PHASE)
    once = asyncio.run(_run(tmp_path / "once", phases))
    twice = asyncio.run(_run(tmp_path / "twice", [*phases, phases[1], MERGE_PHASE]))
    assert twice == once


def test_a_performed_step_names_its_items_by_step_id_and_study_else_accession(
    tmp_path: Path,
) -> None:
    by_study = {
        STUDY_UID: el("UI", f"{ROOT}.2"),
        ACCESSION: el("SH", "typed"),
        STEP_ID: el("SH", "S2"),
    }
    by_accession = {
        ACCESSION: el("SH", "A3"),
        REQUESTED_PROCEDURE_ID: el("SH", "RP3"),
        STEP_ID: el("SH", "S3"),
    }
    created = PerformedStepCreated(
        sop_instance_uid=PPS_UID,
        dataset={**CREATED.dataset, SSA: el("SQ", by_study, by_accession)},
        calling_ae="CT1",
        received_at=CREATED.received_at,
    )
    phases: list[tuple[WorkflowEvent, ...]] = [(order(1), order(2), order(3)), (created,)]
    final = asyncio.run(_run(tmp_path / "data", phases))
    assert {k: v[0] for k, v in final.items.items()} == {
        "order-1": "SCHEDULED",
        "order-2": "STARTED",
        "order-3": "STARTED",
    }
