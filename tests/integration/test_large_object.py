"""A 200 MB multi-frame object is received to disk in chunks and retrieved intact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread

from tests import dicomdata
from tests.integration.peers import dcmtk, find_stored, storescu
from tests.integration.server import Server


def digest(path: Path) -> str:
    ds = dcmread(path, stop_before_pixels=True)
    start = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    sha = hashlib.sha256()
    with path.open("rb") as fp:
        fp.seek(start)
        while chunk := fp.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@pytest.mark.slow
def test_200_mb_multiframe_round_trip(fresh_server: Server, tmp_path: Path) -> None:
    big = dicomdata.make_large_multiframe(tmp_path / "big.dcm", 200 * 1024 * 1024)
    storescu(fresh_server, [big])
    ds = dcmread(big, stop_before_pixels=True)
    find_stored(fresh_server, "IMAGE", 1, StudyInstanceUID=ds.StudyInstanceUID)
    out = tmp_path / "back"
    out.mkdir()
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        fresh_server.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={ds.StudyInstanceUID}",
        fresh_server.host,
        str(fresh_server.dicom_port),
    )
    (received,) = list(out.iterdir())
    assert digest(received) == digest(big)
