"""Modality Worklist C-FIND (PS3.4 K.6.1) of the worklist service, with a pynetdicom SCU.

Items are put in the Worklist store the index writes; the queries go through
the same DICOM port and AE title as the archive's Query/Retrieve C-FIND.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from micropacs.ports import WorklistItem
from services.worklist.mwl import MWL_FIND
from tests.service.conftest import Running, StartPacs
from tests.service.peers import FIND, PENDING, associate, find, study_identifier
from tests.worklistdata import scheduled

SUCCESS = 0x0000
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700


def put(pacs: Running, *items: WorklistItem) -> None:
    for item in items:
        pacs.loop_call(pacs.worklist.put_item(item))


def query(**step_keys: Any) -> Dataset:
    """An identifier with the usual return keys and the given step keys (top-level keys
    are passed with a ``top_`` prefix)."""
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    step = Dataset()
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepStartDate = ""
    step.Modality = ""
    for key, value in step_keys.items():
        if key.startswith("top_"):
            setattr(ds, key.removeprefix("top_"), value)
        else:
            setattr(step, key, value)
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def mwl(pacs: Running, identifier: Dataset, ae_title: str = "CT01") -> tuple[list[Dataset], int]:
    with associate(pacs, [MWL_FIND], ae_title=ae_title) as assoc:
        matches: list[Dataset] = []
        for status, found in assoc.send_c_find(identifier, MWL_FIND):
            assert status is not None and "Status" in status, "C-FIND timed out or aborted"
            if int(status.Status) in PENDING:
                assert found is not None
                matches.append(found)
            else:
                return matches, int(status.Status)
    raise AssertionError("C-FIND ended without a final response")


def accessions(matches: list[Dataset]) -> list[str]:
    return sorted(str(m.AccessionNumber) for m in matches)


@pytest.fixture
def department(pacs: Running) -> Running:
    """Three scheduled steps on two stations, one completed."""
    put(
        pacs,
        scheduled("1", accession="A1", date="20260301", time="080000", study="2.25.11"),
        scheduled(
            "2",
            accession="A2",
            station="MR01",
            modality="MR",
            date="20260302",
            time="140000",
            patient="Dvorak^Anna",
            patient_id="P2",
            physician="Svoboda^Petr",
            procedure="RP2",
            study="2.25.12",
        ),
        scheduled("3", accession="A3", date="20260303", study="2.25.13", status="COMPLETED"),
        scheduled("4", accession="A4", date="20260304", patient_id="P1", issuer="OTHER"),
    )
    return pacs


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["A1", "A2", "A4"]),
        ({"ScheduledStationAETitle": "MR01"}, ["A2"]),
        ({"Modality": "CT"}, ["A1", "A4"]),
        ({"ScheduledProcedureStepStartDate": "20260302"}, ["A2"]),
        ({"ScheduledProcedureStepStartDate": "20260302-"}, ["A2", "A4"]),
        ({"ScheduledProcedureStepStartDate": "-20260302"}, ["A1", "A2"]),
        ({"ScheduledProcedureStepStartDate": "20260301-20260302"}, ["A1", "A2"]),
        (
            {
                "ScheduledProcedureStepStartDate": "20260302",
                "ScheduledProcedureStepStartTime": "-1200",
            },
            [],
        ),
        ({"ScheduledPerformingPhysicianName": "Svob*"}, ["A2"]),
        ({"top_PatientName": "Dvo*"}, ["A2"]),
        ({"top_PatientName": "D?e^John"}, ["A1", "A4"]),
        ({"top_PatientID": "P1", "top_IssuerOfPatientID": "HOSP"}, ["A1"]),
        ({"top_PatientID": "P1"}, ["A1", "A4"]),
        ({"top_AccessionNumber": "A2"}, ["A2"]),
        ({"top_RequestedProcedureID": "RP2"}, ["A2"]),
        ({"top_StudyInstanceUID": "2.25.11"}, ["A1"]),
        ({"ScheduledProcedureStepStatus": "COMPLETED"}, ["A3"]),
    ],
)
def test_each_matching_key(department: Running, keys: dict[str, str], expected: list[str]) -> None:
    matches, status = mwl(department, query(**keys))
    assert status == SUCCESS
    assert accessions(matches) == expected


def test_every_required_return_key_is_answered(department: Running) -> None:
    """K.6.1.2.2: Type 1 and 2 return keys are present even when not asked for."""
    identifier = Dataset()
    identifier.AccessionNumber = "A2"
    [match], status = mwl(department, identifier)
    assert status == SUCCESS
    assert match.PatientName == "Dvorak^Anna"
    assert match.PatientID == "P2"
    assert match.StudyInstanceUID == "2.25.12"
    assert match.RequestedProcedureID == "RP2"
    assert "ReferringPhysicianName" in match and match.ReferringPhysicianName in (None, "")
    assert "PatientWeight" in match
    [step] = match.ScheduledProcedureStepSequence
    assert step.ScheduledStationAETitle == "MR01"
    assert step.ScheduledProcedureStepStartDate == "20260302"
    assert step.ScheduledProcedureStepStartTime == "140000"
    assert step.Modality == "MR"
    assert step.ScheduledProcedureStepID == "S2"
    assert "ScheduledStationName" in step


def test_a_second_step_item_or_a_sequence_that_is_not_one_answers_a900(pacs: Running) -> None:
    identifier = query()
    identifier.ScheduledProcedureStepSequence.append(Dataset())
    matches, status = mwl(pacs, identifier)
    assert (matches, status) == ([], IDENTIFIER_DOES_NOT_MATCH)
    assert pacs.metric("micropacs_worklist_mwl_queries_total", status="0xA900") == 1


def test_a_private_matching_key_is_answered_ff01(department: Running) -> None:
    identifier = query(top_AccessionNumber="A1")
    identifier.add_new(0x00091010, "LO", "x")
    with associate(department, [MWL_FIND]) as assoc:
        statuses = [int(s.Status) for s, _ in assoc.send_c_find(identifier, MWL_FIND)]
    assert statuses == [0xFF01, SUCCESS]


def test_own_station_only_shows_the_calling_station_its_items(start_pacs: StartPacs) -> None:
    pacs = start_pacs()
    pacs.worklist_app.worklist._settings = pacs.settings.worklist.model_copy(
        update={"own_station_only": True}
    )
    put(pacs, scheduled("1", accession="A1"), scheduled("2", accession="A2", station="MR01"))
    assert accessions(mwl(pacs, query(), ae_title="MR01")[0]) == ["A2"]
    assert accessions(mwl(pacs, query(), ae_title="US01")[0]) == []
    named = query(ScheduledStationAETitle="CT01")
    assert accessions(mwl(pacs, named, ae_title="MR01")[0]) == ["A1"]


@pytest.mark.parametrize(
    ("stored", "name", "requested", "answered"),
    [
        ("ISO_IR 100", "Müller^Jürgen", "", "ISO_IR 100"),
        ("ISO_IR 101", "Dvořák^Jiří", "", "ISO_IR 101"),
        ("ISO_IR 192", "Dvořák^Jiří", "", "ISO_IR 192"),
        ("ISO_IR 101", "Dvořák^Jiří", "ISO_IR 192", "ISO_IR 192"),
        ("ISO_IR 100", "Dvořák^Jiří", "", "ISO_IR 192"),
    ],
)
def test_names_are_answered_in_a_character_set_that_holds_them(
    pacs: Running, stored: str, name: str, requested: str, answered: str
) -> None:
    put(pacs, scheduled("1", patient=name, charset=stored))
    identifier = query()
    if requested:
        identifier.SpecificCharacterSet = requested
    [match], status = mwl(pacs, identifier)
    assert status == SUCCESS
    assert match.SpecificCharacterSet == answered
    assert str(match.PatientName) == name


def final_status(pacs: Running, identifier: Dataset) -> Dataset:
    """The final response of one worklist C-FIND (its status and Error Comment)."""
    with associate(pacs, [MWL_FIND]) as assoc:
        for status, _ in assoc.send_c_find(identifier, MWL_FIND):
            assert status is not None and "Status" in status, "C-FIND timed out or aborted"
            if int(status.Status) not in PENDING:
                return status
    raise AssertionError("C-FIND ended without a final response")


def test_a_query_reading_too_many_candidates_is_refused_a700(pacs: Running) -> None:
    pacs.worklist_app.worklist._query = pacs.settings.query.model_copy(update={"max_examined": 2})
    # Finished steps are history: left out before they are read, they cost nothing.
    finished = [scheduled(f"{n}", accession=f"F{n}", status="COMPLETED") for n in range(5)]
    put(pacs, *finished, scheduled("7", accession="A7"), scheduled("8", accession="A8"))
    matches, status = mwl(pacs, query(ScheduledStationName="NOWHERE"))  # no index holds it
    assert (matches, status) == ([], SUCCESS)
    put(pacs, scheduled("9", accession="A9"))
    refused = final_status(pacs, query(ScheduledStationName="NOWHERE"))
    assert int(refused.Status) == OUT_OF_RESOURCES
    assert "more than 2" in refused.ErrorComment
    assert pacs.metric("micropacs_worklist_mwl_queries_total", status="0xA700") == 1


def test_query_retrieve_c_find_still_reaches_the_archive(department: Running) -> None:
    """Both models on one port: a Study Root C-FIND is the archive's, not the worklist's."""
    with associate(department, [FIND, MWL_FIND]) as assoc:
        studies, status = find(assoc, study_identifier(StudyInstanceUID=""))
        assert (studies, status) == ([], SUCCESS)
    assert (
        department.metric(
            "micropacs_dimse_operations_total", service="qr", operation="C-FIND", status="0x0000"
        )
        == 1
    )
    mwl(department, query())
    assert (
        department.metric(
            "micropacs_dimse_operations_total",
            service="worklist",
            operation="C-FIND",
            status="0x0000",
        )
        == 1
    )
