"""Coercion at ingest end to end: ``micropacs serve`` with a rules file that assigns the
Issuer of Patient ID of one calling AE and fixes Philips' images of the MR rooms' AE group;
what storescu stores is found coerced by findscu and arrives coerced, pixel data untouched,
at a DCMTK storescp that a forward rule of the same file sends it to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests import dicomdata
from tests.integration.peers import findscu, free_port, storescu
from tests.integration.server import micropacs, start_server
from tests.integration.test_router import Storescp, register, wait_for

RULES = """
rules:
  - name: issuer-of-the-mr-console
    match: {calling_ae: STORESCU}
    coerce:
      - {set: IssuerOfPatientID, value: HOSPITAL_A}
  - name: philips-fix
    match:
      ae_group: mr-rooms
      modality: MR
      attributes: {Manufacturer: "Philips*"}
    coerce:
      - {copy: 2001100A, to: InstanceNumber}   # Philips' Slice Number MR
      - {copy: PatientID, to: OtherPatientIDs}
      - {remove: InstitutionName}
  - name: to-the-workstation
    forward: [{destination: WS}]
"""


def philips_series(folder: Path, n: int) -> list[Path]:
    """``n`` MR slices from a Philips scanner, their slice numbers only in the private block."""
    folder.mkdir(parents=True)
    study, series = dicomdata.StudySpec(), dicomdata.SeriesSpec()
    files = []
    for number in range(1, n + 1):
        ds = dicomdata.mr_image(study, series, instance_number=1, rows=64, cols=64)
        ds.Manufacturer = "Philips Medical Systems"
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x0A, "IS", str(number))
        files.append(dicomdata.write(ds, folder / f"mr{number:03d}.dcm"))
    return files


@pytest.fixture
def workstation(tmp_path: Path) -> Iterator[Storescp]:
    folder = tmp_path / "ws"
    folder.mkdir()
    peer = Storescp("WS", free_port(), folder)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def test_coerced_at_ingest_found_so_and_forwarded_so(
    tmp_path: Path, server_env: dict[str, str], workstation: Storescp
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {**server_env, "MICROPACS_ROUTER__RULES_FILE": str(rules)}
    data_dir = tmp_path / "data"
    register(data_dir, env, workstation)
    micropacs(
        "nodes", "add", "STORESCU", "127.0.0.1", "104", "--ae-group", "mr-rooms",
        data_dir=data_dir, env=env,
    )  # fmt: skip
    files = philips_series(tmp_path / "mr", 3)
    sent = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, files)}
    study = next(iter(sent.values())).StudyInstanceUID
    server = start_server(data_dir, env=env)
    try:
        storescu(server, files)

        def images() -> dict[str, int]:
            found = findscu(
                server,
                {
                    "QueryRetrieveLevel": "IMAGE",
                    "StudyInstanceUID": study,
                    "SOPInstanceUID": "",
                    "InstanceNumber": "",
                },
                tmp_path / "find-images",
            )
            return {str(ds.SOPInstanceUID): int(ds.InstanceNumber) for ds in found}

        expected = {uid: int(ds[0x2001100A].value) for uid, ds in sent.items()}
        wait_for(lambda: images() == expected, "every image indexed with its coerced number")
        (patient,) = findscu(
            server,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study, "IssuerOfPatientID": ""},
            tmp_path / "find-study",
        )
        assert patient.IssuerOfPatientID == "HOSPITAL_A"

        wait_for(lambda: workstation.received() == set(sent), "WS got every instance")
        for path in workstation.folder.iterdir():
            if path.name.startswith("."):
                continue
            got = dcmread(path)
            original = sent[str(got.SOPInstanceUID)]
            assert got.IssuerOfPatientID == "HOSPITAL_A"
            assert got.InstanceNumber == int(original[0x2001100A].value)
            assert got.OtherPatientIDs == original.PatientID
            assert "InstitutionName" not in got
            assert got[0x2001100A].value == original[0x2001100A].value
            assert got.PixelData == original.PixelData
    finally:
        server.stop()
