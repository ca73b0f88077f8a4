"""A C-STORE the backend cannot keep, or whose request contradicts its dataset, is refused
and leaves nothing half-acknowledged (ARCHITECTURE.md, rule 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from micropacs.events import INSTANCE_STORED, InstanceStored
from tests.service.conftest import Running, StartPacs
from tests.service.outages import folder_replaced_by_file, sqlite_write_lock
from tests.service.peers import ct_files, dataset_body, file_meta, part10, store

OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900


def announced(pacs: Running) -> list[str]:
    """SOP Instance UIDs of every instance.stored event in the log."""
    return [
        InstanceStored.from_bytes(record.value).sop_instance_uid
        for record in pacs.published(INSTANCE_STORED)
    ]


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_event_log_closed_answers_a700_and_announces_nothing(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(index=False)  # the consumer would die with the log it reads
    [path] = ct_files(tmp_path / "in", 1)
    pacs.loop_call(pacs.bus.close())

    assert store(pacs, path) == [OUT_OF_RESOURCES]
    assert announced(pacs) == []
    assert pacs.leftovers() == []
    assert pacs.metric("micropacs_ingest_backend_errors_total", backend="event_bus") == 1


def test_event_log_locked_answers_a700_then_the_resent_object_is_stored(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(busy_timeout=0.3)
    first, second = ct_files(tmp_path / "in", 2)
    with sqlite_write_lock(pacs.data_dir / "events.db"):
        assert store(pacs, first) == [OUT_OF_RESOURCES]
        assert pacs.leftovers() == []
    assert announced(pacs) == []

    assert store(pacs, first, second) == [0x0000, 0x0000]
    assert sorted(announced(pacs)) == sorted([uid_of(first), uid_of(second)])
    pacs.wait_indexed([uid_of(first), uid_of(second)])
    assert pacs.leftovers() == []


def test_file_store_unusable_answers_a700_then_the_resent_object_is_stored(
    pacs: Running, tmp_path: Path
) -> None:
    [path] = ct_files(tmp_path / "in", 1)
    with folder_replaced_by_file(pacs.data_dir / "objects"):
        assert store(pacs, path) == [OUT_OF_RESOURCES]
        assert pacs.leftovers() == []
    assert pacs.stored_keys() == []
    assert announced(pacs) == []
    assert pacs.metric("micropacs_ingest_backend_errors_total", backend="object_store") == 1

    assert store(pacs, path) == [0x0000]
    assert announced(pacs) == [uid_of(path)]
    [location] = pacs.wait_indexed([uid_of(path)])
    assert pacs.stored_keys() == [location.object_key]


@pytest.mark.parametrize("differs", ["SOPInstanceUID", "SOPClassUID"])
def test_request_uid_differing_from_the_dataset_is_refused(
    pacs: Running, tmp_path: Path, differs: str
) -> None:
    [path] = ct_files(tmp_path / "in", 1)
    if differs == "SOPInstanceUID":
        meta, sop_class = file_meta(CTImageStorage, generate_uid()), CTImageStorage
    else:
        meta, sop_class = file_meta(MRImageStorage, uid_of(path)), MRImageStorage
    sent = part10(tmp_path / "contradicting.dcm", meta, dataset_body(path))

    assert store(pacs, sent, sop_class=sop_class) == [DATASET_DOES_NOT_MATCH]
    assert pacs.stored_keys() == []
    assert announced(pacs) == []
    assert pacs.leftovers() == []
