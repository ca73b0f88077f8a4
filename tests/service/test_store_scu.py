"""The C-STORE SCU every send uses (``Associations.store``: forwarding, send jobs), against
pynetdicom storage SCPs: each stored file sent as stored with its status, a refusal kept
per instance, and a destination that aborts part-way failing the rest at once, not after
the DIMSE timeout, though the association's reactor is held paused for the whole run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pynetdicom import evt

from micropacs.config import Settings
from micropacs.dimse.ae import configure_pynetdicom
from micropacs.dimse.scu import Associations
from micropacs.ports import InstanceLocation, Node
from tests.service.peers import ct_files, sop_instance_of, storage_scp


def locations(files: list[Path]) -> list[InstanceLocation]:
    found = []
    for path in files:
        header = dcmread(path, stop_before_pixels=True)
        found.append(
            InstanceLocation(
                sop_instance_uid=str(header.SOPInstanceUID),
                sop_class_uid=str(header.SOPClassUID),
                series_instance_uid=str(header.SeriesInstanceUID),
                study_instance_uid=str(header.StudyInstanceUID),
                object_key=str(path),
                transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
                size=path.stat().st_size,
            )
        )
    return found


@contextlib.contextmanager
def local(loc: InstanceLocation) -> Iterator[Path]:
    yield Path(loc.object_key)


def send(port: int, files: list[Path], timeout: float = 30.0) -> tuple[list[int | None], str]:
    configure_pynetdicom()
    statuses: list[int | None] = []
    reason = Associations(Settings().dicom, timeout).store(
        Node("DESTINATION", "127.0.0.1", port),
        locations(files),
        local,
        lambda loc, status, error: statuses.append(status),
    )
    return statuses, reason


def test_each_file_is_stored_as_sent_and_a_refusal_is_kept(tmp_path: Path) -> None:
    files = ct_files(tmp_path / "ct", 4)
    refused = str(dcmread(files[2], stop_before_pixels=True).SOPInstanceUID)
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        uid = sop_instance_of(event)
        if uid == refused:
            return 0xA700
        received[uid] = bytes(event.dataset.PixelData)
        return 0x0000

    with storage_scp(on_store) as port:
        statuses, reason = send(port, files)
    assert (statuses, reason) == ([0, 0, 0xA700, 0], "")
    for path in files:
        header = dcmread(path)
        uid = str(header.SOPInstanceUID)
        if uid != refused:
            assert received[uid] == header.PixelData


def test_a_destination_that_aborts_part_way_fails_the_rest_at_once(tmp_path: Path) -> None:
    files = ct_files(tmp_path / "ct", 5)
    taken: list[str] = []

    def on_store(event: evt.Event) -> int:
        if len(taken) == 2:
            event.assoc.abort()
            return 0xA700
        taken.append(sop_instance_of(event))
        return 0x0000

    with storage_scp(on_store) as port:
        started = time.monotonic()
        statuses, reason = send(port, files, timeout=20.0)
        elapsed = time.monotonic() - started
    print(statuses, reason, elapsed)
    assert statuses[:2] == [0, 0]
    assert all(status is None or status >= 0xA000 for status in statuses[2:])
    assert len(statuses) == 5
    assert reason, "the association's end is the reason"
    assert elapsed < 10, f"waited {elapsed:.1f} s: the abort was not seen"
