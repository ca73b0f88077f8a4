"""Worklist contract: what every worklist adapter must do (micropacs.ports.Worklist).

Items are DICOM JSON (PS3.18 F.2) with one ScheduledProcedureStepSequence
item; queries follow PS3.4 K.6.1.2 with the matching of C.2.2.2, sequence
matching (C.2.2.2.6) on the scheduled step. Each matching key is tried on its
own (an adapter may pre-filter on it) and beside a key found only in the
stored JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from micropacs.adapters._worklist_keys import KEYS, STATIONS
from micropacs.adapters.factory import open_worklist
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson
from micropacs.errors import InvalidInput, QueryTooBroad
from micropacs.ports import PatientDemographics, PerformedStep, Worklist, WorklistItem
from stack import servers
from tests.contract.conftest import Runner

ROOT = "1.2.826.0.1.3680043.10.543.11"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ISSUER = "00100021"
PATIENT_BIRTH_DATE = "00100030"
ACCESSION = "00080050"
STUDY_UID = "0020000D"
REQUESTED_PROCEDURE_ID = "00401001"
REQUESTED_PROCEDURE_DESCRIPTION = "00321060"  # not indexed
SPS = "00400100"
STATION_AE = "00400001"
MODALITY = "00080060"
START_DATE = "00400002"
START_TIME = "00400003"
PHYSICIAN = "00400006"
STEP_DESCRIPTION = "00400007"  # not indexed
STEP_ID = "00400009"
STEP_STATUS = "00400020"
PPS_STATUS = "00400252"


def el(vr: str, *values: Any) -> DicomJson:
    kept = [value for value in values if value != ""]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def pn(name: str, ideographic: str = "") -> DicomJson:
    value = {"Alphabetic": name} | ({"Ideographic": ideographic} if ideographic else {})
    return {"vr": "PN", "Value": [value]} if name else {"vr": "PN"}


def sps(**step: DicomJson) -> DicomJson:
    """An identifier's or item's ScheduledProcedureStepSequence of one item."""
    return {SPS: {"vr": "SQ", "Value": [step]}}


def scheduled(
    number: int,
    *,
    patient_id: str,
    issuer: str = "",
    name: str = "",
    ideographic: str = "",
    stations: tuple[str, ...] = (),
    modality: str = "CT",
    date: str = "",
    time: str = "",
    physician: str = "",
    status: str = "SCHEDULED",
    description: str = "",
) -> WorklistItem:
    dataset: DicomJson = {
        PATIENT_ID: el("LO", patient_id),
        ISSUER: el("LO", issuer),
        PATIENT_NAME: pn(name, ideographic),
        PATIENT_BIRTH_DATE: el("DA", "19700101"),
        ACCESSION: el("SH", f"ACC{number}"),
        REQUESTED_PROCEDURE_ID: el("SH", f"RP{number}"),
        REQUESTED_PROCEDURE_DESCRIPTION: el("LO", description),
        STUDY_UID: el("UI", f"{ROOT}.{number}"),
        **sps(
            **{
                STATION_AE: el("AE", *stations),
                MODALITY: el("CS", modality),
                START_DATE: el("DA", date),
                START_TIME: el("TM", time),
                PHYSICIAN: pn(physician),
                STEP_DESCRIPTION: el("LO", description),
                STEP_ID: el("SH", f"S{number}"),
                STEP_STATUS: el("CS", status),
            }
        ),
    }
    return WorklistItem(f"item-{number}", dataset, updated_at="2026-03-01T08:00:00+00:00")


ITEMS = (
    scheduled(
        1,
        patient_id="P1",
        issuer="H1",
        name="Novák^Jiří",
        stations=("CT1",),
        date="20260310",
        time="0800",
        physician="Dvořák^Jan",
        description="CT chest",
    ),
    scheduled(
        2,
        patient_id="P2",
        issuer="H2",
        name="山田^太郎",
        ideographic="山田^太郎",
        stations=("MR1", "MR2"),
        modality="MR",
        date="20260311",
        time="143000",
        physician="Svoboda^Petr",
        status="STARTED",
        description="MR head",
    ),
    scheduled(
        3,
        patient_id="P1",
        issuer="H2",
        name="Nováková^Eva",
        stations=("CT1",),
        date="20260311",
        time="0900",
        description="CT abdomen",
    ),
    scheduled(
        4,
        patient_id="P3",
        name="Doe^John",
        modality="US",
        date="20260312",
        time="1000",
        status="COMPLETED",
    ),
)
"""In scheduled order: 1 (10 March), 3 (11 March 09:00), 2 (11 March 14:30), 4 (12 March)."""
ORDER = ["item-1", "item-3", "item-2", "item-4"]


def _unique() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def worklist_url(shared_stack: servers.Stack | None, tmp_path: Path) -> str:
    """The test's own store: its own SQLite file, or its own MongoDB database."""
    if shared_stack is not None:
        return shared_stack.env["MICROPACS_STORAGE__CATALOG_URL"] + f"-{_unique()}"
    return f"sqlite://{tmp_path / 'worklist.db'}"


@pytest.fixture
def worklist(worklist_url: str, run: Runner) -> Iterator[Worklist]:
    opened = run(open_worklist(worklist_url))
    yield opened
    run(opened.close())


@pytest.fixture
def filled(worklist: Worklist, run: Runner) -> Worklist:
    """The store with :data:`ITEMS` (put in another order than the scheduled one)."""
    for item in reversed(ITEMS):
        run(worklist.put_item(item))
    return worklist


def found(run: Runner, worklist: Worklist, identifier: DicomJson, **options: Any) -> list[str]:
    async def collect() -> list[str]:
        return [item.item_id async for item in worklist.find_items(identifier, **options)]

    return run(collect())


def test_the_indexed_keys_are_those_of_the_worklist_model() -> None:
    assert {key.name for key in (*KEYS, STATIONS)} == {f.name for f in fields(wl.WorklistKeys)}


def test_put_item_and_read_it_back_as_stored(worklist: Worklist, run: Runner) -> None:
    item = ITEMS[1]
    run(worklist.put_item(item))
    assert run(worklist.item(item.item_id)) == item
    assert run(worklist.item(item.item_id)).dataset == item.dataset  # type: ignore[union-attr]
    assert run(worklist.item("item-none")) is None


def test_put_item_replaces_and_is_idempotent(worklist: Worklist, run: Runner) -> None:
    first = ITEMS[0]
    changed = replace(first, dataset={**first.dataset, ACCESSION: el("SH", "ACC-NEW")})
    run(worklist.put_item(first))
    run(worklist.put_item(changed))
    run(worklist.put_item(changed))
    assert run(worklist.item(first.item_id)) == changed
    assert found(run, worklist, {}) == [first.item_id]
    assert found(run, worklist, {ACCESSION: el("SH", "ACC1")}) == []
    assert found(run, worklist, {ACCESSION: el("SH", "ACC-NEW")}) == [first.item_id]


def test_a_replaced_item_matches_its_new_stations_only(worklist: Worklist, run: Runner) -> None:
    item = ITEMS[1]
    moved = replace(item, dataset=wl.with_status(item.dataset, "SCHEDULED"))
    step = dict(wl.scheduled_step(moved.dataset))
    step[STATION_AE] = el("AE", "US9")
    moved = replace(moved, dataset={**moved.dataset, **sps(**step)})
    run(worklist.put_item(item))
    run(worklist.put_item(moved))
    assert found(run, worklist, sps(**{STATION_AE: el("AE", "MR1")})) == []
    assert found(run, worklist, sps(**{STATION_AE: el("AE", "US9")})) == [item.item_id]


def test_remove_item(filled: Worklist, run: Runner) -> None:
    assert run(filled.remove_item("item-3")) is True
    assert run(filled.remove_item("item-3")) is False
    assert run(filled.item("item-3")) is None
    assert found(run, filled, sps(**{STATION_AE: el("AE", "CT1")})) == ["item-1"]


def test_set_item_status(filled: Worklist, run: Runner) -> None:
    assert run(filled.set_item_status("item-1", "STARTED")) is True
    assert run(filled.set_item_status("item-1", "STARTED")) is True  # idempotent
    assert run(filled.set_item_status("item-none", "STARTED")) is False
    stored = run(filled.item("item-1"))
    assert stored is not None
    assert wl.keys_of(stored.dataset).status == "STARTED"
    assert stored.dataset[PATIENT_NAME] == ITEMS[0].dataset[PATIENT_NAME]  # the rest kept
    assert found(run, filled, sps(**{STEP_STATUS: el("CS", "STARTED")})) == ["item-1", "item-2"]
    assert found(run, filled, sps(**{STEP_STATUS: el("CS", "SCHEDULED")})) == ["item-3"]


def test_every_item_in_scheduled_order(filled: Worklist, run: Runner) -> None:
    assert found(run, filled, {}) == ORDER
    # Return keys alone, the sequence's too, are universal matches (C.2.2.2.3).
    universal = {PATIENT_NAME: pn(""), **sps(**{STATION_AE: el("AE"), START_DATE: el("DA")})}
    assert found(run, filled, universal) == ORDER


def test_limit(filled: Worklist, run: Runner) -> None:
    assert found(run, filled, {}, limit=2) == ORDER[:2]
    assert found(run, filled, {}, limit=10) == ORDER
    with pytest.raises(InvalidInput):
        found(run, filled, {}, limit=-1)


def test_unfinished_only_leaves_out_the_steps_that_are_over(filled: Worklist, run: Runner) -> None:
    # PS3.4 K.6.1.2.2: a query without a status key sees the steps still to do.
    for number, status in ((5, "DISCONTINUED"), (6, "CANCELED"), (7, "")):
        run(filled.put_item(scheduled(number, patient_id="P5", date="20260313", status=status)))
    assert found(run, filled, {}, unfinished_only=True) == ["item-1", "item-3", "item-2", "item-7"]
    assert found(run, filled, {PATIENT_ID: el("LO", "P5")}, unfinished_only=True) == ["item-7"]
    assert found(run, filled, {}) == [*ORDER, "item-5", "item-6", "item-7"]


def test_max_examined_bounds_the_candidates_read_and_thrown_away(
    filled: Worklist, run: Runner
) -> None:
    # A key no index holds: every item is a candidate, matched on its stored JSON.
    by_description = {REQUESTED_PROCEDURE_DESCRIPTION: el("LO", "MR head")}
    assert found(run, filled, by_description, max_examined=3) == ["item-2"]
    with pytest.raises(QueryTooBroad):
        found(run, filled, by_description, max_examined=2)
    # The finished step is left out before it is read, so it costs nothing.
    assert found(run, filled, by_description, max_examined=2, unfinished_only=True) == ["item-2"]
    with pytest.raises(InvalidInput):
        found(run, filled, {}, max_examined=-1)


TOP_LEVEL_CASES: dict[str, tuple[DicomJson, list[str]]] = {
    "patient id": ({PATIENT_ID: el("LO", "P1")}, ["item-1", "item-3"]),
    "patient id of an issuer": (
        {PATIENT_ID: el("LO", "P1"), ISSUER: el("LO", "H1")},
        ["item-1"],
    ),
    "patient id of the other issuer": (
        {PATIENT_ID: el("LO", "P1"), ISSUER: el("LO", "H2")},
        ["item-3"],
    ),
    "issuer alone": ({ISSUER: el("LO", "H2")}, ["item-3", "item-2"]),
    "patient id wildcard": ({PATIENT_ID: el("LO", "P?")}, ORDER),
    "czech name": ({PATIENT_NAME: pn("Novák^Jiří")}, ["item-1"]),
    "czech name prefix": ({PATIENT_NAME: pn("Nov*")}, ["item-1", "item-3"]),
    "czech longer prefix": ({PATIENT_NAME: pn("Nováková*")}, ["item-3"]),
    "name with ?": ({PATIENT_NAME: pn("?ovák^Jiří")}, ["item-1"]),
    "name suffix": ({PATIENT_NAME: pn("*^Eva")}, ["item-3"]),
    "japanese name": ({PATIENT_NAME: pn("山田^太郎")}, ["item-2"]),
    "japanese prefix": ({PATIENT_NAME: pn("山田*")}, ["item-2"]),
    "name no one has": ({PATIENT_NAME: pn("Novak^Jiri")}, []),
    "accession": ({ACCESSION: el("SH", "ACC1")}, ["item-1"]),
    "accession wildcard": ({ACCESSION: el("SH", "ACC*")}, ORDER),
    "requested procedure id": ({REQUESTED_PROCEDURE_ID: el("SH", "RP2")}, ["item-2"]),
    "study uid": ({STUDY_UID: el("UI", f"{ROOT}.3")}, ["item-3"]),
    "study uid list": ({STUDY_UID: el("UI", f"{ROOT}.1", f"{ROOT}.4")}, ["item-1", "item-4"]),
    "a key only in the JSON": (
        {REQUESTED_PROCEDURE_DESCRIPTION: el("LO", "CT*")},
        ["item-1", "item-3"],
    ),
    "indexed and not indexed": (
        {PATIENT_ID: el("LO", "P1"), REQUESTED_PROCEDURE_DESCRIPTION: el("LO", "*abdomen")},
        ["item-3"],
    ),
}


@pytest.mark.parametrize("case", sorted(TOP_LEVEL_CASES))
def test_top_level_matching_keys(filled: Worklist, run: Runner, case: str) -> None:
    identifier, expected = TOP_LEVEL_CASES[case]
    assert found(run, filled, identifier) == expected


STEP_CASES: dict[str, tuple[DicomJson, list[str]]] = {
    "station": ({STATION_AE: el("AE", "CT1")}, ["item-1", "item-3"]),
    "one station of several": ({STATION_AE: el("AE", "MR2")}, ["item-2"]),
    "station wildcard": ({STATION_AE: el("AE", "MR*")}, ["item-2"]),
    "station no item has": ({STATION_AE: el("AE", "CT2")}, []),
    "modality": ({MODALITY: el("CS", "CT")}, ["item-1", "item-3"]),
    "modality any of": ({MODALITY: el("CS", "MR", "US")}, ["item-2", "item-4"]),
    "date": ({START_DATE: el("DA", "20260311")}, ["item-3", "item-2"]),
    "date range": ({START_DATE: el("DA", "20260310-20260311")}, ["item-1", "item-3", "item-2"]),
    "date range open after": ({START_DATE: el("DA", "20260311-")}, ["item-3", "item-2", "item-4"]),
    "date range open before": ({START_DATE: el("DA", "-20260310")}, ["item-1"]),
    "time range": ({START_TIME: el("TM", "0800-1000")}, ["item-1", "item-3", "item-4"]),
    "time range open after": ({START_TIME: el("TM", "1400-")}, ["item-2"]),
    "time range open before": ({START_TIME: el("TM", "-0900")}, ["item-1", "item-3"]),
    "date and time": (
        {START_DATE: el("DA", "20260311"), START_TIME: el("TM", "0800-1000")},
        ["item-3"],
    ),
    "physician": ({PHYSICIAN: pn("Dvořák^Jan")}, ["item-1"]),
    "physician prefix": ({PHYSICIAN: pn("Svo*")}, ["item-2"]),
    "step id": ({STEP_ID: el("SH", "S4")}, ["item-4"]),
    "status": ({STEP_STATUS: el("CS", "COMPLETED")}, ["item-4"]),
    "statuses": ({STEP_STATUS: el("CS", "SCHEDULED", "STARTED")}, ["item-1", "item-3", "item-2"]),
    "a key only in the JSON": ({STEP_DESCRIPTION: el("LO", "MR*")}, ["item-2"]),
    "station and date": (
        {STATION_AE: el("AE", "CT1"), START_DATE: el("DA", "20260311-")},
        ["item-3"],
    ),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_keys_of_the_scheduled_step_match_its_item(
    filled: Worklist, run: Runner, case: str
) -> None:
    step, expected = STEP_CASES[case]
    assert found(run, filled, sps(**step)) == expected


def test_top_level_and_sequence_keys_together(filled: Worklist, run: Runner) -> None:
    identifier = {
        PATIENT_ID: el("LO", "P1"),
        PATIENT_NAME: pn("Nov*"),
        **sps(**{STATION_AE: el("AE", "CT1"), START_DATE: el("DA", "20260311")}),
    }
    assert found(run, filled, identifier) == ["item-3"]


def test_a_step_key_outside_the_sequence_is_matched_where_it_is(
    filled: Worklist, run: Runner
) -> None:
    # Modality at the top level is no key of the scheduled step: no item has one there.
    assert found(run, filled, {MODALITY: el("CS", "CT")}) == []


def test_person_names_ignoring_case_when_asked(filled: Worklist, run: Runner) -> None:
    lower = {PATIENT_NAME: pn("novák^jiří")}
    assert found(run, filled, lower) == []
    assert found(run, filled, lower, case_insensitive_pn=True) == ["item-1"]
    assert found(run, filled, {PATIENT_NAME: pn("NOVÁ*")}, case_insensitive_pn=True) == [
        "item-1",
        "item-3",
    ]
    physician = sps(**{PHYSICIAN: pn("dvořák*")})
    assert found(run, filled, physician, case_insensitive_pn=True) == ["item-1"]


def test_a_multi_valued_indexed_attribute_matches_any_of_its_values(
    worklist: Worklist, run: Runner
) -> None:
    # Modality has VM 1 in the scheduled step, but a stored item may still hold several.
    item = scheduled(7, patient_id="P7", modality="", date="20260320")
    step = {**wl.scheduled_step(item.dataset), MODALITY: el("CS", "CT", "PT")}
    run(worklist.put_item(replace(item, dataset={**item.dataset, **sps(**step)})))
    assert found(run, worklist, sps(**{MODALITY: el("CS", "PT")})) == ["item-7"]
    assert found(run, worklist, sps(**{MODALITY: el("CS", "MR")})) == []


def test_an_item_without_start_date_is_found_and_ordered_first(
    filled: Worklist, run: Runner
) -> None:
    run(filled.put_item(scheduled(9, patient_id="P9")))
    assert found(run, filled, {}) == ["item-9", *ORDER]
    assert found(run, filled, sps(**{START_DATE: el("DA", "20260301-")})) == ORDER


def test_item_ids_are_checked(worklist: Worklist, run: Runner) -> None:
    with pytest.raises(InvalidInput):
        run(worklist.put_item(replace(ITEMS[0], item_id="")))
    with pytest.raises(InvalidInput):
        run(worklist.put_item(replace(ITEMS[0], item_id="x" * 129)))


def performed(uid: str, status: str, updated_at: str, calling_ae: str = "CT1") -> PerformedStep:
    dataset = {PPS_STATUS: el("CS", status), "00400253": el("SH", uid[-4:])}
    return PerformedStep(f"{ROOT}.9.{uid}", dataset, calling_ae, "2026-03-10T08:00:00", updated_at)


def test_put_step_and_read_it_back(worklist: Worklist, run: Runner) -> None:
    step = performed("1001", "IN PROGRESS", "2026-03-10T08:00:00")
    run(worklist.put_step(step))
    run(worklist.put_step(step))
    assert run(worklist.step(step.sop_instance_uid)) == step
    assert run(worklist.step(f"{ROOT}.9.0")) is None
    done = replace(step, dataset={PPS_STATUS: el("CS", "COMPLETED")}, updated_at="2026-03-10T09")
    run(worklist.put_step(done))
    stored = run(worklist.step(step.sop_instance_uid))
    assert stored == done
    assert stored is not None and stored.dataset == done.dataset


def test_steps_by_status_and_time(worklist: Worklist, run: Runner) -> None:
    steps = [
        performed("1003", "COMPLETED", "2026-03-10T10:00:00"),
        performed("1001", "IN PROGRESS", "2026-03-10T08:00:00"),
        performed("1002", "COMPLETED", "2026-03-10T09:00:00"),
        performed("1004", "DISCONTINUED", "2026-03-10T11:00:00"),
    ]
    for step in steps:
        run(worklist.put_step(step))

    async def collect(**filters: str) -> list[str]:
        return [s.sop_instance_uid[-4:] async for s in worklist.steps(**filters)]

    assert run(collect()) == ["1001", "1002", "1003", "1004"]
    assert run(collect(status="COMPLETED")) == ["1002", "1003"]
    assert run(collect(updated_before="2026-03-10T10:00:00")) == ["1001", "1002"]
    assert run(collect(status="COMPLETED", updated_before="2026-03-10T09:30")) == ["1002"]
    assert run(collect(updated_after="2026-03-10T09:00:00")) == ["1002", "1003", "1004"]
    window = {"updated_after": "2026-03-10T09:30", "updated_before": "2026-03-10T11:00:00"}
    assert run(collect(status="COMPLETED", **window)) == ["1003"]
    assert run(collect(status="CANCELED")) == []


def test_patients_by_issuer_and_id(worklist: Worklist, run: Runner) -> None:
    czech = PatientDemographics("P1", "H1", {PATIENT_NAME: pn("Černý^Řehoř")}, "", "t1")
    other = PatientDemographics("P1", "H2", {PATIENT_NAME: pn("鈴木^花子")}, "", "t1")
    no_issuer = PatientDemographics("P1", "", {PATIENT_NAME: pn("Doe^Jane")}, "", "t1")
    for patient in (czech, other, no_issuer, czech):
        run(worklist.put_patient(patient))
    assert run(worklist.patient("P1", "H1")) == czech
    assert run(worklist.patient("P1", "H2")) == other
    assert run(worklist.patient("P1", "")) == no_issuer
    assert run(worklist.patient("P2", "H1")) is None
    stored = run(worklist.patient("P1", "H2"))
    assert stored is not None and stored.dataset == other.dataset
    merged = replace(czech, merged_into="H2|P1", updated_at="t2")
    run(worklist.put_patient(merged))
    assert run(worklist.patient("P1", "H1")) == merged


def test_check_answers(worklist: Worklist, run: Runner) -> None:
    run(worklist.check())


def test_sqlite_worklist_survives_reopening(worklist_url: str, run: Runner) -> None:
    first = run(open_worklist(worklist_url))
    run(first.put_item(ITEMS[1]))
    run(first.close())
    second = run(open_worklist(worklist_url))
    try:
        assert run(second.item(ITEMS[1].item_id)) == ITEMS[1]
        assert found(run, second, sps(**{STATION_AE: el("AE", "MR1")})) == ["item-2"]
    finally:
        run(second.close())
