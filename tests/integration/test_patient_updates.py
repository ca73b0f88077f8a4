"""Patient updates reach the archive: ADT^A08 and ADT^A40 sent over MLLP to ``micropacs
serve`` change what C-FIND and QIDO-RS answer for studies already stored, and C-GET and
WADO-RS send the objects with the current Patient module while the stored files stay
as received."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset, dcmread

from micropacs.adapters.factory import open_blob_store
from micropacs.config import Settings
from stack import servers
from tests.dicomdata import StudySpec, make_ct_series
from tests.integration.conftest import isolated_env
from tests.integration.peers import find_stored, pyfind, pyget, storescu, study_identifier
from tests.integration.server import Server, start_server
from tests.integration.test_worklist_loop import send_hl7
from tests.unit.hl7_samples import adt

CT = "1.2.840.10008.5.1.4.1.1.2"
NEW_PID = "PID|1||NEW-1^^^HOSP||Updated^Name||19800202|F"


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, shared_stack: servers.Stack | None
) -> Iterator[tuple[Server, dict[str, list[Path]]]]:
    root = tmp_path_factory.mktemp("patients")
    server = start_server(root / "data", env=isolated_env(shared_stack))
    files = {
        pid: make_ct_series(
            root / pid,
            2,
            32,
            32,
            study=StudySpec(patient_id=pid, issuer_of_patient_id="HOSP", patient_name=name),
        )
        for pid, name in (("OLD-1", "Old^Name"), ("NEW-1", "New^Name"))
    }
    storescu(server, [*files["OLD-1"], *files["NEW-1"]])
    find_stored(server, "STUDY", 2)
    yield server, files
    server.stop()


def studies(server: Server, **match: str) -> list[Dataset]:
    keys = {"StudyInstanceUID": "", "PatientName": "", "PatientID": "", **match}
    found, status = pyfind(server, study_identifier(**keys))
    assert status == 0x0000
    return found


def stored_objects(server: Server) -> dict[str, bytes]:
    """Every object of the server's blob store (files or S3), by key."""
    saved = dict(os.environ)
    try:
        os.environ.update(server.env)
        os.environ["MICROPACS_DATA_DIR"] = str(server.data_dir)
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)

    async def read() -> dict[str, bytes]:
        blobs = await open_blob_store(settings.blob_url, fsync=False, s3=settings.s3)
        try:
            found = {}
            async for key in blobs.iterate():
                found[key] = b"".join([chunk async for chunk in blobs.read(key)])
            return found
        finally:
            await blobs.close()

    return asyncio.run(read())


def digests(objects: dict[str, bytes]) -> dict[str, str]:
    return {key: hashlib.sha256(data).hexdigest() for key, data in objects.items()}


def test_a08_then_a40_change_queries_and_retrievals(
    archive: tuple[Server, dict[str, list[Path]]],
) -> None:
    server, files = archive
    if not server.hl7_port:
        pytest.skip("this micropacs serve announces no HL7 port")
    before = digests(stored_objects(server))
    assert len(before) == 4

    assert send_hl7(server.hl7_port, adt("A08", pid=NEW_PID)).segment("MSA")[1][0] == "AA"
    (updated,) = studies(server, PatientName="Updated^Name")  # the ACK came first
    assert updated.PatientID == "NEW-1"

    a40 = adt("A40", pid=NEW_PID, extra="MRG|OLD-1^^^HOSP")
    assert send_hl7(server.hl7_port, a40).segment("MSA")[1][0] == "AA"
    assert len(studies(server, PatientID="NEW-1")) == 2
    assert studies(server, PatientID="OLD-1") == []
    assert {str(s.PatientName) for s in studies(server, PatientID="NEW-1")} == {"Updated^Name"}

    qido = httpx.get(f"{server.http}/dicom-web/studies", params={"PatientID": "NEW-1"})
    assert qido.status_code == 200
    assert {s["00100010"]["Value"][0]["Alphabetic"] for s in qido.json()} == {"Updated^Name"}
    assert (
        httpx.get(f"{server.http}/dicom-web/studies", params={"PatientID": "OLD-1"}).status_code
        == 204
    )

    old_study = dcmread(files["OLD-1"][0]).StudyInstanceUID
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = old_study
    received, status = pyget(server, identifier, [CT])
    assert status == 0x0000 and len(received) == 2
    assert {(str(r.PatientName), r.PatientID, r.PatientSex) for r in received} == {
        ("Updated^Name", "NEW-1", "F")
    }
    assert all(r.PixelData == dcmread(files["OLD-1"][0]).PixelData for r in received[:1])

    wado = httpx.get(
        f"{server.http}/dicom-web/studies/{old_study}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    assert wado.status_code == 200
    parts = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + wado.headers["content-type"].encode() + b"\r\n\r\n" + wado.content
    )
    payloads = [part.get_payload(decode=True) for part in parts.iter_parts()]
    objects = [dcmread(BytesIO(p)) for p in payloads if isinstance(p, bytes)]
    assert len(objects) == 2
    assert {(str(o.PatientName), o.PatientID) for o in objects} == {("Updated^Name", "NEW-1")}

    stored = stored_objects(server)
    assert digests(stored) == before  # the archive keeps the objects as received
    names = {str(dcmread(BytesIO(data)).PatientName) for data in stored.values()}
    assert names == {"Old^Name", "New^Name"}
