"""BlobStore contract of the storage groups' store (:mod:`micropacs.adapters.grouped`):
each key goes to its group's own store, every other to the default one, and an object
of a group written to the default store before the group had a store of its own stays
readable, listable and deletable."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from micropacs.adapters.factory import open_blob_store, open_blob_stores
from micropacs.config import S3Settings
from micropacs.errors import NotFound
from micropacs.ports import BlobStore
from tests.contract.conftest import Runner

STUDY = "1.2.826.0.1.3680043.10.543.7"
SERIES = f"{STUDY}.1"


def key(group: str, number: int) -> str:
    return f"{group}/{STUDY}/{SERIES}/{SERIES}.{number}.dcm"


@pytest.fixture
def archive_url(blob_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The archive group's own store: another folder, or another bucket."""
    if blob_url.startswith("s3://"):
        # A bucket of its own name: the default store lists the buckets <its bucket>-<group>.
        base, _, bucket = blob_url.rpartition("/")
        return f"{base}/arc{bucket.rpartition('-')[2]}"
    return f"file://{tmp_path_factory.mktemp('archive')}"


@pytest.fixture
def stores(
    blob_url: str, archive_url: str, s3_settings: S3Settings | None, run: Runner
) -> Iterator[tuple[BlobStore, BlobStore, BlobStore]]:
    """The grouped store, and the default and archive stores on their own."""
    grouped = run(open_blob_stores(blob_url, {"archive": archive_url}, fsync=True, s3=s3_settings))
    default = run(open_blob_store(blob_url, fsync=True, s3=s3_settings))
    archive = run(open_blob_store(archive_url, fsync=True, s3=s3_settings))
    yield grouped, default, archive
    for store in (grouped, default, archive):
        run(store.close())


async def _read(store: BlobStore, name: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(name)])


async def _keys(store: BlobStore, prefix: str) -> list[str]:
    return sorted([found async for found in store.iterate(prefix)])


def test_each_key_goes_to_its_groups_store(
    stores: tuple[BlobStore, BlobStore, BlobStore], run: Runner
) -> None:
    grouped, default, archive = stores
    for group, number in (("default", 1), ("archive", 2), ("mr", 3)):
        body = f"object {number}".encode()
        run(grouped.put(key(group, number), io.BytesIO(body), len(body)))
    assert run(default.stat(key("default", 1))) is not None
    assert run(default.stat(key("mr", 3))) is not None
    assert run(default.stat(key("archive", 2))) is None
    assert run(archive.stat(key("archive", 2))) is not None
    assert run(archive.stat(key("default", 1))) is None
    assert run(_read(grouped, key("archive", 2))) == b"object 2"
    assert run(_keys(grouped, f"archive/{STUDY}/")) == [key("archive", 2)]
    assert run(_keys(grouped, f"default/{STUDY}/")) == [key("default", 1)]
    assert run(_keys(grouped, "")) == sorted(
        key(g, n) for g, n in (("default", 1), ("archive", 2), ("mr", 3))
    )

    run(grouped.delete(key("archive", 2)))
    assert run(archive.stat(key("archive", 2))) is None
    with pytest.raises(NotFound):
        run(_read(grouped, key("archive", 2)))


def test_objects_written_before_the_group_had_its_store_stay_readable(
    stores: tuple[BlobStore, BlobStore, BlobStore], run: Runner
) -> None:
    grouped, default, _ = stores
    old = key("archive", 4)
    run(default.put(old, io.BytesIO(b"written before"), 14))

    assert run(_read(grouped, old)) == b"written before"
    info = run(grouped.stat(old))
    assert info is not None
    assert info.size == 14

    async def through_local_path() -> bytes:
        async with grouped.local_path(old) as path:
            return path.read_bytes()

    assert run(through_local_path()) == b"written before"
    assert run(_keys(grouped, f"archive/{STUDY}/")) == [old]
    run(grouped.delete(old))
    assert run(default.stat(old)) is None
    assert run(grouped.stat(old)) is None
