"""The worklist of ``micropacs serve``: DCMTK's ``findscu -W`` (PS3.4 K.6) and pynetdicom as
MPPS SCU (PS3.4 F.7), on the one DICOM port and AE title of the archive.

Items are put in the server's Worklist store (the one the index writes from
the worklist events), opened here through the same factory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from micropacs.adapters.factory import open_worklist
from micropacs.config import Settings
from micropacs.ports import WorklistItem
from services.worklist.mpps import MPPS_SOP_CLASS
from tests.integration.peers import dcmtk, keys
from tests.integration.server import Server, start_server
from tests.worklistdata import completed, in_progress, scheduled


def worklist_url(server: Server) -> str:
    """The worklist store URL the server uses (its settings read from its environment)."""
    saved = dict(os.environ)
    try:
        os.environ.update(server.env)
        os.environ["MICROPACS_DATA_DIR"] = str(server.data_dir)
        return Settings().worklist_url
    finally:
        os.environ.clear()
        os.environ.update(saved)


def put(server: Server, *items: WorklistItem) -> None:
    async def go() -> None:
        worklist = await open_worklist(worklist_url(server))
        try:
            for item in items:
                await worklist.put_item(item)
        finally:
            await worklist.close()

    asyncio.run(go())


def findscu_w(
    server: Server, identifier: dict[str, str], out: Path, *, calling: str = "FINDSCU"
) -> list[Dataset]:
    """``findscu -W``: the worklist answers as DCMTK extracted them."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    dcmtk(
        "findscu",
        "-W",
        "-aet",
        calling,
        "-aec",
        server.ae_title,
        "-X",
        "-od",
        str(out),
        *keys(identifier),
        server.host,
        str(server.dicom_port),
    )
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


STEP = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = {
    "PatientName": "",
    "PatientID": "",
    "AccessionNumber": "",
    f"{STEP}.ScheduledStationAETitle": "",
    f"{STEP}.ScheduledProcedureStepStartDate": "",
    f"{STEP}.Modality": "",
}


@pytest.fixture(scope="module")
def department(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("worklist") / "data")
    put(
        server,
        scheduled("1", accession="A1", date="20260301", study="2.25.11"),
        scheduled(
            "2",
            accession="A2",
            station="MR01",
            modality="MR",
            date="20260302",
            patient="Dvořák^Jiří",
            patient_id="P2",
            physician="Svoboda^Petr",
            procedure="RP2",
            study="2.25.12",
            charset="ISO_IR 101",
        ),
        scheduled("3", accession="A3", date="20260303", status="COMPLETED"),
        scheduled("4", accession="A4", patient="Müller^Jürgen", charset="ISO_IR 100"),
        scheduled("5", accession="A5", patient="Łukasz^Ewa", patient_id="P5", charset="ISO_IR 192"),
        scheduled("6", accession="A6", patient_id="P1", issuer="OTHER"),
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        ({}, ["A1", "A2", "A4", "A5", "A6"]),
        ({f"{STEP}.ScheduledStationAETitle": "MR01"}, ["A2"]),
        ({f"{STEP}.Modality": "MR"}, ["A2"]),
        ({f"{STEP}.ScheduledProcedureStepStartDate": "20260302-"}, ["A2"]),
        ({f"{STEP}.ScheduledProcedureStepStartDate": "-20260301"}, ["A1", "A4", "A5", "A6"]),
        ({f"{STEP}.ScheduledPerformingPhysicianName": "Svoboda*"}, ["A2"]),
        ({"PatientName": "Doe*"}, ["A1", "A6"]),
        ({"PatientID": "P1", "IssuerOfPatientID": "OTHER"}, ["A6"]),
        ({"AccessionNumber": "A4"}, ["A4"]),
        ({"RequestedProcedureID": "RP2"}, ["A2"]),
        ({"StudyInstanceUID": "2.25.11"}, ["A1"]),
        ({f"{STEP}.ScheduledProcedureStepStatus": "COMPLETED"}, ["A3"]),
    ],
)
def test_findscu_w_matches_each_key(
    department: Server, tmp_path: Path, matching: dict[str, str], expected: list[str]
) -> None:
    answers = findscu_w(department, {**RETURN_KEYS, **matching}, tmp_path)
    assert sorted(str(a.AccessionNumber) for a in answers) == expected


@pytest.mark.parametrize(
    ("accession", "charset", "name"),
    [
        ("A2", "ISO_IR 101", "Dvořák^Jiří"),
        ("A4", "ISO_IR 100", "Müller^Jürgen"),
        ("A5", "ISO_IR 192", "Łukasz^Ewa"),
    ],
)
def test_non_ascii_names_arrive_in_their_character_set(
    department: Server, tmp_path: Path, accession: str, charset: str, name: str
) -> None:
    [answer] = findscu_w(department, {**RETURN_KEYS, "AccessionNumber": accession}, tmp_path)
    assert answer.SpecificCharacterSet == charset
    assert str(answer.PatientName) == name


def test_own_station_only(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"MICROPACS_WORKLIST__OWN_STATION_ONLY": "true"})
    try:
        put(server, scheduled("1", accession="A1"), scheduled("2", accession="A2", station="MR01"))
        mine = findscu_w(server, RETURN_KEYS, tmp_path / "mr", calling="MR01")
        assert [str(a.AccessionNumber) for a in mine] == ["A2"]
        named = {**RETURN_KEYS, f"{STEP}.ScheduledStationAETitle": "CT01"}
        theirs = findscu_w(server, named, tmp_path / "ct", calling="MR01")
        assert [str(a.AccessionNumber) for a in theirs] == ["A1"]
    finally:
        server.stop()


def test_mpps_through_serve(department: Server) -> None:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate(department.host, department.dicom_port, ae_title=department.ae_title)
    assert assoc.is_established
    try:
        uid = generate_uid()
        status, _ = assoc.send_n_create(
            in_progress(study="2.25.11", step_id="S1"), MPPS_SOP_CLASS, uid
        )
        assert status is not None and int(status.Status) == 0x0000
        # The same N-CREATE again (its answer lost) is accepted; another one is a duplicate.
        status, _ = assoc.send_n_create(in_progress(), MPPS_SOP_CLASS, uid)
        assert status is not None and int(status.Status) == 0x0000
        status, _ = assoc.send_n_create(in_progress(step_id="S2"), MPPS_SOP_CLASS, uid)
        assert status is not None and int(status.Status) == 0x0111
        status, _ = assoc.send_n_set(completed(), MPPS_SOP_CLASS, uid)
        assert status is not None and int(status.Status) == 0x0000
        status, _ = assoc.send_n_set(completed(), MPPS_SOP_CLASS, uid)
        assert status is not None and int(status.Status) == 0x0110
        status, _ = assoc.send_n_set(completed(), MPPS_SOP_CLASS, generate_uid())
        assert status is not None and int(status.Status) == 0x0112
    finally:
        assoc.release()
