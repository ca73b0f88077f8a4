"""The SHA-256 recorded at store time (Storage Commitment, PS3.4 J): every store path puts in
``instance.stored`` the digest of exactly the bytes the BlobStore holds, and the index keeps it.

C-STORE (hashed as pynetdicom writes the received file), STOW-RS (as each part is
written), ``micropacs import``'s copy (as the store reads the file) and a copy
compressed at rest (read once, as nothing else reads it): each is checked against
the stored file's bytes, hashed here independently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from micropacs.adapters.files import FileBlobStore
from micropacs.checksums import file_sha256
from micropacs.events import INSTANCE_STORED, InstanceStored
from services.ingest import store_service
from services.ingest.store_service import Received
from tests.service import peers
from tests.service.conftest import Running, StartPacs


def stored_events(pacs: Running) -> list[InstanceStored]:
    return [InstanceStored.from_bytes(r.value) for r in pacs.published(INSTANCE_STORED)]


@pytest.fixture
def files_hashed_again(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the store reads again to hash them (none on the hot paths)."""
    read: list[Path] = []

    def counted(path: Path) -> str:
        read.append(path)
        return file_sha256(path)

    monkeypatch.setattr(store_service, "file_sha256", counted)
    return read


def sha256_of_object(pacs: Running, key: str) -> str:
    assert isinstance(pacs.blobs, FileBlobStore)
    return hashlib.sha256(pacs.blobs.path_of(key).read_bytes()).hexdigest()


def test_c_store_records_the_checksum_of_the_stored_object(
    pacs: Running, tmp_path: Path, files_hashed_again: list[Path]
) -> None:
    files = peers.ct_files(tmp_path / "ct", 3)

    assert peers.store(pacs, *files) == [0, 0, 0]

    assert files_hashed_again == []  # hashed as it was received

    events = stored_events(pacs)
    assert len(events) == 3
    for event in events:
        assert len(event.sha256) == 64
        assert event.sha256 == sha256_of_object(pacs, event.object_key)
    located = pacs.wait_indexed([e.sop_instance_uid for e in events])
    assert {loc.sop_instance_uid: loc.sha256 for loc in located} == {
        e.sop_instance_uid: e.sha256 for e in events
    }


def test_stow_records_the_checksum_of_each_part(
    pacs: Running, tmp_path: Path, files_hashed_again: list[Path]
) -> None:
    files = peers.ct_files(tmp_path / "ct", 2)

    assert peers.stow(pacs, files).status_code == 200

    assert files_hashed_again == []

    events = stored_events(pacs)
    sent = {hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    assert {event.sha256 for event in events} == sent  # stored as received, byte for byte
    for event in events:
        assert event.sha256 == sha256_of_object(pacs, event.object_key)


def test_an_imported_copy_is_hashed_as_the_store_reads_it(
    pacs: Running, tmp_path: Path, files_hashed_again: list[Path]
) -> None:
    (path,) = peers.ct_files(tmp_path / "ct", 1)
    received = Received(path=path, calling_ae="IMPORT", called_ae=pacs.ae_title, owned=False)

    event = pacs.loop_call(pacs.ingest.store.store(received))

    assert path.exists()  # copied, not moved
    assert files_hashed_again == []
    assert event.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert event.sha256 == sha256_of_object(pacs, event.object_key)
    (published,) = stored_events(pacs)
    assert published.sha256 == event.sha256


def test_a_copy_compressed_at_rest_records_the_compressed_bytes(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(compression="rle")
    files = peers.ct_files(tmp_path / "ct", 2)

    assert peers.store(pacs, *files) == [0, 0]

    for event in stored_events(pacs):
        assert event.original_transfer_syntax_uid  # it was compressed
        assert event.sha256 == sha256_of_object(pacs, event.object_key)
