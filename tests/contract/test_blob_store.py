"""BlobStore contract: what every object store adapter must do (micropacs.ports.BlobStore)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from micropacs.adapters.factory import open_blob_store
from micropacs.errors import BlobStoreUnavailable, InvalidInput, NotFound
from micropacs.ports import BlobInfo, BlobStore
from tests.contract.conftest import Runner

KEY = "default/1.2.826.0.1.3680043.2.1125.1/1.2.826.0.1.3680043.2.1125.2/1.2.3.4.5.dcm"

BAD_KEYS = [
    "",
    "../etc/passwd",
    "default/../../etc/passwd",
    "default/1.2/../1.3/x.dcm",
    "/etc/passwd",
    "default\\1.2\\x.dcm",
    "default//x.dcm",
    "default/x.dcm/",
    "default/ x.dcm",
    "default/x.dcm\x00",
    "default/x;rm -rf.dcm",
    "default/ü.dcm",
    "default/./x.dcm",
    ".tmp/x.dcm",
    "..",
]


async def _read_all(store: BlobStore, key: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, chunk_size)])


async def _keys(store: BlobStore, prefix: str = "") -> set[str]:
    return {key async for key in store.iterate(prefix)}


class Unseekable(io.RawIOBase):
    """A stream with no file descriptor and no seek, like a socket: ``size`` bytes of a pattern."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.remaining, 1 << 16)
        chunk = (self.remaining.to_bytes(8, "big") * (count // 8 + 1))[:count]
        buffer[:count] = chunk
        self.digest.update(chunk)
        self.remaining -= count
        return count


def test_put_then_read_round_trip(blob_store: BlobStore, run: Runner) -> None:
    data = b"DICM" + os.urandom(10_000)
    run(blob_store.put(KEY, io.BytesIO(data), len(data)))

    assert run(_read_all(blob_store, KEY)) == data
    assert run(_read_all(blob_store, KEY, chunk_size=1000)) == data
    assert run(blob_store.stat(KEY)) == BlobInfo(key=KEY, size=len(data))


def test_local_path_holds_the_bytes(blob_store: BlobStore, run: Runner) -> None:
    data = os.urandom(5000)
    run(blob_store.put(KEY, io.BytesIO(data), len(data)))

    async def read_local() -> bytes:
        async with blob_store.local_path(KEY) as path:
            return path.read_bytes()

    assert run(read_local()) == data


def test_put_copies_exactly_size_bytes(blob_store: BlobStore, run: Runner) -> None:
    data = os.urandom(3000)
    run(blob_store.put(KEY, io.BytesIO(data), 1000))

    assert run(_read_all(blob_store, KEY)) == data[:1000]


def test_put_from_a_real_file_starts_at_its_position(
    blob_store: BlobStore, run: Runner, tmp_path: Path
) -> None:
    source = tmp_path / "source.dcm"
    data = os.urandom(100_000)
    source.write_bytes(data)
    with source.open("rb") as handle:
        handle.seek(128)
        run(blob_store.put(KEY, handle, 50_000))
        assert handle.tell() == 128 + 50_000

    assert run(_read_all(blob_store, KEY)) == data[128 : 128 + 50_000]


def test_put_of_a_short_source_stores_nothing(blob_store: BlobStore, run: Runner) -> None:
    with pytest.raises(InvalidInput):
        run(blob_store.put(KEY, io.BytesIO(b"only ten b"), 1000))

    assert run(blob_store.stat(KEY)) is None
    assert run(_keys(blob_store)) == set()


def test_empty_object(blob_store: BlobStore, run: Runner) -> None:
    run(blob_store.put(KEY, io.BytesIO(b""), 0))

    assert run(blob_store.stat(KEY)) == BlobInfo(key=KEY, size=0)
    assert run(_read_all(blob_store, KEY)) == b""


@pytest.mark.slow
def test_50_mb_object_is_streamed_both_ways(
    blob_store: BlobStore, run: Runner, tmp_path: Path
) -> None:
    size = 50 * 1024 * 1024
    source = Unseekable(size)
    run(blob_store.put(KEY, io.BufferedReader(source), size))
    assert source.remaining == 0

    async def digest_of_stream() -> tuple[str, int, int]:
        digest = hashlib.sha256()
        largest = total = 0
        async for chunk in blob_store.read(KEY, chunk_size=1 << 20):
            digest.update(chunk)
            largest = max(largest, len(chunk))
            total += len(chunk)
        return digest.hexdigest(), largest, total

    digest, largest, total = run(digest_of_stream())
    assert total == size
    assert largest <= 1 << 20
    assert digest == source.digest.hexdigest()

    # A real file as the source (the kernel may copy it) gives the same object.
    copy = tmp_path / "big.dcm"
    with copy.open("wb") as out:
        for chunk in run(_chunks(blob_store, KEY)):
            out.write(chunk)
    other = "default/1.2/1.3/1.4.dcm"
    with copy.open("rb") as handle:
        run(blob_store.put(other, handle, size))
    copied = hashlib.sha256()
    for chunk in run(_chunks(blob_store, other)):
        copied.update(chunk)
    assert copied.hexdigest() == digest


async def _chunks(store: BlobStore, key: str) -> list[bytes]:
    return [chunk async for chunk in store.read(key)]


def test_put_file_stores_the_file(blob_store: BlobStore, run: Runner, tmp_path: Path) -> None:
    source = tmp_path / "received.dcm"
    data = os.urandom(20_000)
    source.write_bytes(data)

    run(blob_store.put_file(KEY, source))

    assert run(_read_all(blob_store, KEY)) == data
    assert run(blob_store.stat(KEY)) == BlobInfo(key=KEY, size=len(data))


def test_missing_key(blob_store: BlobStore, run: Runner) -> None:
    assert run(blob_store.stat(KEY)) is None
    with pytest.raises(NotFound):
        run(_read_all(blob_store, KEY))

    async def open_local() -> None:
        async with blob_store.local_path(KEY):
            pass

    with pytest.raises(NotFound):
        run(open_local())


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(blob_store: BlobStore, run: Runner, tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInput):
        run(blob_store.put(key, io.BytesIO(b"x"), 1))
    source = tmp_path / "x.dcm"
    source.write_bytes(b"x")
    with pytest.raises(InvalidInput):
        run(blob_store.put_file(key, source))
    with pytest.raises(InvalidInput):
        run(_read_all(blob_store, key))
    with pytest.raises(InvalidInput):
        run(blob_store.stat(key))
    with pytest.raises(InvalidInput):
        run(blob_store.delete(key))
    assert source.read_bytes() == b"x"
    assert not (tmp_path / "etc").exists()


def test_overwrite_replaces_the_object(blob_store: BlobStore, run: Runner) -> None:
    run(blob_store.put(KEY, io.BytesIO(b"first version, long"), 19))
    run(blob_store.put(KEY, io.BytesIO(b"second"), 6))

    assert run(_read_all(blob_store, KEY)) == b"second"
    assert run(blob_store.stat(KEY)) == BlobInfo(key=KEY, size=6)
    assert run(_keys(blob_store)) == {KEY}


def test_delete_is_idempotent(blob_store: BlobStore, run: Runner) -> None:
    run(blob_store.put(KEY, io.BytesIO(b"data"), 4))

    run(blob_store.delete(KEY))
    run(blob_store.delete(KEY))
    run(blob_store.delete("default/9.9/9.9/9.9.dcm"))

    assert run(blob_store.stat(KEY)) is None
    assert run(_keys(blob_store)) == set()


def test_iterate_by_prefix(blob_store: BlobStore, run: Runner) -> None:
    keys = {
        "default/1.2/1.2.1/1.2.1.1.dcm",
        "default/1.2/1.2.1/1.2.1.2.dcm",
        "default/1.2/1.2.2/1.2.2.1.dcm",
        "default/1.23/1.23.1/1.23.1.1.dcm",
        "archive/1.2/1.2.1/1.2.1.1.dcm",
    }
    for key in keys:
        run(blob_store.put(key, io.BytesIO(key.encode()), len(key)))

    assert run(_keys(blob_store)) == keys
    assert run(_keys(blob_store, "default/")) == {k for k in keys if k.startswith("default/")}
    assert run(_keys(blob_store, "default/1.2/")) == {
        "default/1.2/1.2.1/1.2.1.1.dcm",
        "default/1.2/1.2.1/1.2.1.2.dcm",
        "default/1.2/1.2.2/1.2.2.1.dcm",
    }
    # A prefix is a string prefix, not a folder: 1.2 also covers 1.23.
    assert run(_keys(blob_store, "default/1.2")) == {k for k in keys if k.startswith("default/1.2")}
    assert run(_keys(blob_store, "default/1.2/1.2.1/1.2.1.2")) == {"default/1.2/1.2.1/1.2.1.2.dcm"}
    assert run(_keys(blob_store, "nothing/")) == set()


def test_check_passes_on_a_writable_store(blob_store: BlobStore, run: Runner) -> None:
    run(blob_store.check())


# -- embedded adapter specifics ---------------------------------------------------------------


def test_files_put_file_moves_from_tmp_dir(blob_url: str, run: Runner) -> None:
    from micropacs.adapters.files import FileBlobStore

    store = run(open_blob_store(blob_url, fsync=True))
    assert isinstance(store, FileBlobStore)
    received = store.tmp_dir / "received.dcm"
    received.write_bytes(b"DICM received")
    inode = received.stat().st_ino

    run(store.put_file(KEY, received))

    assert not received.exists()
    assert store.path_of(KEY).stat().st_ino == inode
    assert run(_keys(store)) == {KEY}  # nothing of .tmp is listed
    assert list(store.tmp_dir.iterdir()) == []


def test_files_leave_no_temporary_files(blob_url: str, run: Runner) -> None:
    from micropacs.adapters.files import FileBlobStore

    store = run(open_blob_store(blob_url, fsync=False))
    assert isinstance(store, FileBlobStore)
    run(store.put(KEY, io.BytesIO(b"abc"), 3))
    with pytest.raises(InvalidInput):
        run(store.put(KEY, io.BytesIO(b"abc"), 4))
    run(store.check())

    assert list(store.tmp_dir.iterdir()) == []
    assert store.path_of(KEY).read_bytes() == b"abc"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_files_unwritable_root_is_unavailable(blob_url: str, run: Runner) -> None:
    from micropacs.adapters.files import FileBlobStore

    store = run(open_blob_store(blob_url, fsync=True))
    assert isinstance(store, FileBlobStore)
    store.root.chmod(0o500)
    store.tmp_dir.chmod(0o500)
    try:
        with pytest.raises(BlobStoreUnavailable, match="permission"):
            run(store.put(KEY, io.BytesIO(b"abc"), 3))
        with pytest.raises(BlobStoreUnavailable):
            run(store.check())
    finally:
        store.tmp_dir.chmod(0o700)
        store.root.chmod(0o700)


def test_files_full_disk_is_unavailable_with_advice() -> None:
    from micropacs.adapters.files import _unavailable

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to produce a real ENOSPC")
    # /dev/full answers every write with ENOSPC, as a full disk does.
    with Path("/dev/full").open("wb", buffering=0) as full, pytest.raises(OSError) as caught:
        full.write(b"x")

    error = _unavailable("write", Path("/dev/full"), caught.value)
    assert isinstance(error, BlobStoreUnavailable)
    assert error.retryable
    assert "disk is full" in str(error)


@pytest.mark.parametrize(
    "url", ["s3://127.0.0.1:9/", "s3://127.0.0.1:9/Bad_Bucket", "ftp://host/x", "/var/lib/objects"]
)
def test_factory_refuses_stores_it_cannot_open(run: Runner, url: str) -> None:
    with pytest.raises(InvalidInput):
        run(open_blob_store(url, fsync=True))


def test_unreachable_s3_is_unavailable_not_a_crash(run: Runner) -> None:
    with pytest.raises(BlobStoreUnavailable, match="unreachable"):
        run(open_blob_store("s3://127.0.0.1:9/objects", fsync=True))
