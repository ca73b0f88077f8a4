"""IOCM rejection notes end to end against a running ``micropacs serve``: images stored with
DCMTK storescu, then a rejection KOS (built with pydicom) stored with storescu too. What it
rejects is gone from C-FIND (findscu), QIDO-RS, C-GET and WADO-RS, the note itself is
found, an instance it names that arrives after it is hidden on arrival, and with a delay
set the rejected instances are deleted, objects and all.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.dataset import Dataset

from micropacs.iocm import KEY_OBJECT_SELECTION
from tests import dicomdata
from tests.integration.peers import findscu, pyget, storescu
from tests.integration.server import Server, start_server
from tests.integration.test_deletion import counts, objects
from tests.iocmdata import rejection_kos, write_kos

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _study(folder: Path, n: int) -> list[Path]:
    spec = dicomdata.StudySpec(
        study_instance_uid=f"2.25.{uuid.uuid4().int}", patient_id=f"IOCM-{uuid.uuid4().hex[:8]}"
    )
    return dicomdata.make_ct_series(folder, n, rows=16, cols=16, study=spec)


def _uid(path: Path, keyword: str = "SOPInstanceUID") -> str:
    return str(getattr(dcmread(path, stop_before_pixels=True), keyword))


def _image_uids(server: Server, study: str, out: Path) -> list[str]:
    found = findscu(
        server,
        {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": ""},
        out,
    )
    return sorted(str(ds.SOPInstanceUID) for ds in found)


def _qido_uids(server: Server, study: str) -> list[str]:
    answer = httpx.get(f"{server.http}/dicom-web/studies/{study}/instances")
    if answer.status_code == 204:
        return []
    answer.raise_for_status()
    return sorted(item["00080018"]["Value"][0] for item in answer.json())


def test_a_rejection_note_hides_its_instances_from_every_service(
    fresh_server: Server, tmp_path: Path
) -> None:
    images = _study(tmp_path / "study", 4)
    study = _uid(images[0], "StudyInstanceUID")
    storescu(fresh_server, images[:3])
    late = images[3]  # named by the note, stored only after it
    note = rejection_kos([images[0], images[1], late])
    kos = write_kos(note, tmp_path / "kos" / "rejection.dcm")
    storescu(fresh_server, [kos])
    storescu(fresh_server, [late])
    kept, kos_uid = _uid(images[2]), str(note.SOPInstanceUID)

    # C-FIND (DCMTK findscu): the note and the instance it spares, nothing else.
    assert _image_uids(fresh_server, study, tmp_path / "find") == sorted([kept, kos_uid])
    [at_study] = findscu(
        fresh_server,
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": study,
            "NumberOfStudyRelatedInstances": "",
            "NumberOfStudyRelatedSeries": "",
        },
        tmp_path / "find-study",
    )
    assert int(at_study.NumberOfStudyRelatedInstances) == 2
    assert int(at_study.NumberOfStudyRelatedSeries) == 2  # the CT series and the note's
    for rejected in (images[0], late):
        direct = {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study}
        direct["SOPInstanceUID"] = _uid(rejected)
        assert findscu(fresh_server, direct, tmp_path / f"direct-{_uid(rejected)}") == []

    # QIDO-RS and WADO-RS.
    assert _qido_uids(fresh_server, study) == sorted([kept, kos_uid])
    series = _uid(images[0], "SeriesInstanceUID")
    rejected_url = (
        f"{fresh_server.http}/dicom-web/studies/{study}/series/{series}/instances/{_uid(images[0])}"
    )
    assert httpx.get(rejected_url, headers={"Accept": "multipart/related"}).status_code == 404

    # C-GET of the study brings the note and the spared instance only.
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    received, status = pyget(fresh_server, identifier, [CT_IMAGE, KEY_OBJECT_SELECTION])
    assert status == 0x0000
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == sorted([kept, kos_uid])

    # Hidden, not deleted: no delay is set, so their objects stay.
    assert counts(fresh_server).instances == 2
    stored = objects(fresh_server)
    assert all(any(_uid(p) in key for key in stored) for p in (images[0], images[1], late))


def test_rejected_instances_are_deleted_after_the_delay(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    env = {
        **server_env,
        "MICROPACS_IOCM__DELETE_REJECTED_AFTER": "1",
        "MICROPACS_IOCM__DELETE_INTERVAL": "0.2",
    }
    server = start_server(tmp_path / "data", env=env)
    try:
        images = _study(tmp_path / "study", 3)
        storescu(server, images)
        kos = write_kos(rejection_kos(images[:2], title="113039"), tmp_path / "kos.dcm")
        storescu(server, [kos])
        rejected = [_uid(p) for p in images[:2]]
        deadline = time.monotonic() + 60
        while any(uid in key for key in objects(server) for uid in rejected):
            assert time.monotonic() < deadline, "rejected objects still stored after 60 s"
            time.sleep(0.2)
        left = objects(server)
        assert any(_uid(images[2]) in key for key in left)
        assert any(_uid(kos) in key for key in left)
        assert counts(server).instances == 2
        assert "rejected instances asked for deletion" in server.log()
    finally:
        server.stop()
