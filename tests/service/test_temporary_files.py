"""No refusal leaves a file behind in the data directory's temporary folder.

pynetdicom receives each dataset into a temporary file there, STOW-RS saves
its parts there and compression at rest writes its output there: every one
must be gone once the refusal is answered, or a busy archive fills its disk
with them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, generate_uid

from tests import dicomdata
from tests.service.conftest import Running, StartPacs
from tests.service.outages import folder_replaced_by_file
from tests.service.peers import ct_files, dataset_body, file_meta, part10, store, stow

STUDY_MISMATCH = 0xC409
FAILURE_REASON = "00081197"
FAILED_SOP_SEQUENCE = "00081198"


def bad_uid(pacs: Running, folder: Path) -> Path:
    ds = dicomdata.ct_image(rows=64, cols=64)
    ds.SeriesInstanceUID = "1.2.abc"
    return dicomdata.write(ds, folder / "bad-uid.dcm")


def uid_mismatch(pacs: Running, folder: Path) -> Path:
    [path] = ct_files(folder, 1)
    return part10(
        folder / "mismatch.dcm", file_meta(CTImageStorage, generate_uid()), dataset_body(path)
    )


def not_dicom(pacs: Running, folder: Path) -> Path:
    body = b"this is not a dataset at all\n" * 50
    return part10(folder / "junk.dcm", file_meta(CTImageStorage, generate_uid()), body)


def good(pacs: Running, folder: Path) -> Path:
    return ct_files(folder, 1)[0]


def no_outage(pacs: Running) -> AbstractContextManager[None]:
    return nullcontext()


def file_store_down(pacs: Running) -> AbstractContextManager[None]:
    return folder_replaced_by_file(pacs.data_dir / "objects")


def event_log_down(pacs: Running) -> AbstractContextManager[None]:
    pacs.loop_call(pacs.bus.close())
    return nullcontext()


Refusal = tuple[
    Callable[[Running, Path], Path], Callable[[Running], AbstractContextManager[None]], int
]
REFUSALS: dict[str, Refusal] = {
    "bad-uid": (bad_uid, no_outage, 0xA900),
    "uid-mismatch": (uid_mismatch, no_outage, 0xA900),
    "not-dicom": (not_dicom, no_outage, 0xC000),
    "file-store-down": (good, file_store_down, 0xA700),
    "event-log-down": (good, event_log_down, 0xA700),
}


# pydicom warns about the malformed UID this test sends on purpose.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("compression", ["none", "rle"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_refused_c_store_leaves_no_temporary_file(
    start_pacs: StartPacs, tmp_path: Path, refusal: str, compression: str
) -> None:
    make, outage, status = REFUSALS[refusal]
    pacs = start_pacs(compression=compression, index=False)
    sent = make(pacs, tmp_path / "in")
    with outage(pacs):
        assert store(pacs, sent) == [status]
        assert pacs.leftovers() == []


def test_stow_to_another_study_leaves_no_compressed_file(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(compression="rle")
    [path] = ct_files(tmp_path / "in", 1)
    other_study = generate_uid()
    assert dcmread(path, stop_before_pixels=True).StudyInstanceUID != other_study

    answer = stow(pacs, [path], study=other_study)

    assert answer.status_code == 409
    [failed] = answer.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [STUDY_MISMATCH]
    assert pacs.stored_keys() == []
    assert [name for name in pacs.leftovers() if name.startswith("compressed-")] == []
    assert pacs.leftovers() == []
