"""One BlobStore over several storage groups, each with a store of its own (a folder or
an S3 bucket; docs/lifecycle.md).

Every object key starts with its storage group (``<group>/<study>/<series>/<instance>.dcm``,
as ingest forms it), so the key alone says where the object lies: a group named in
``MICROPACS_STORAGE__GROUPS`` has its own store, every other group (the default one, and
any key written before groups existed) lives in the store of ``MICROPACS_STORAGE__BLOB_URL``.
Ingest, qr, admin and the index's deletions keep calling one BlobStore.

A read that misses in a group's own store is tried in the default store too: objects
of a group written there before the group got a store of its own stay readable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from micropacs.adapters.files import FileBlobStore
from micropacs.errors import NotFound
from micropacs.ports import BlobInfo, BlobStore


def group_of(key: str) -> str:
    """The storage group an object key names (its first segment)."""
    return key.split("/", 1)[0]


class GroupedBlobStore:
    """Routes each key to its storage group's store; ``default`` holds every other."""

    def __init__(self, default: BlobStore, groups: Mapping[str, BlobStore]) -> None:
        self._default = default
        self._groups = dict(groups)

    @property
    def groups(self) -> Mapping[str, BlobStore]:
        """The groups that have a store of their own, by name."""
        return self._groups

    def store_of(self, group: str) -> BlobStore:
        """The store holding the objects of ``group``."""
        return self._groups.get(group, self._default)

    def _store(self, key: str) -> BlobStore:
        return self.store_of(group_of(key))

    def _fallback(self, key: str) -> BlobStore | None:
        """Where else an object may lie: the default store, for a group with its own."""
        store = self._store(key)
        return None if store is self._default else self._default

    async def put(self, key: str, source: BinaryIO, size: int) -> None:
        """Store the object in its group's store; durable when this returns."""
        await self._store(key).put(key, source, size)

    async def put_file(self, key: str, path: Path) -> None:
        """Move the file into its group's store."""
        await self._store(key).put_file(key, path)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream the object from its group's store (or, missing there, the default one)."""
        fallback = self._fallback(key)
        started = False
        try:
            async for chunk in self._store(key).read(key, chunk_size):
                started = True
                yield chunk
        except NotFound:
            if started or fallback is None:
                raise
        else:
            return
        async for chunk in fallback.read(key, chunk_size):
            yield chunk

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """A local file of the object, from its group's store (or, missing there, the
        default one)."""
        fallback = self._fallback(key)
        async with AsyncExitStack() as stack:
            try:
                path = await stack.enter_async_context(self._store(key).local_path(key))
            except NotFound:
                if fallback is None:
                    raise
                path = await stack.enter_async_context(fallback.local_path(key))
            yield path

    async def stat(self, key: str) -> BlobInfo | None:
        """The object's size and write time, wherever it lies; None if nowhere."""
        found = await self._store(key).stat(key)
        fallback = self._fallback(key)
        if found is None and fallback is not None:
            found = await fallback.stat(key)
        return found

    async def delete(self, key: str) -> None:
        """Remove the object from its group's store (and the default one)."""
        await self._store(key).delete(key)
        fallback = self._fallback(key)
        if fallback is not None:
            await fallback.delete(key)

    async def iterate(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key starting with ``prefix``: from the group's store (and the default one)
        when the prefix names a group, each key once; else from every store, where a key
        both a group's store and the default one hold is listed twice."""
        _, slash, _ = prefix.partition("/")
        if not slash:
            for store in (self._default, *self._groups.values()):
                async for key in store.iterate(prefix):
                    yield key
            return
        seen: set[str] = set()
        async for key in self._store(prefix).iterate(prefix):
            seen.add(key)
            yield key
        fallback = self._fallback(prefix)
        if fallback is not None:
            async for key in fallback.iterate(prefix):
                if key not in seen:
                    yield key

    async def check(self) -> None:
        """Raise BlobStoreUnavailable unless every store can be written now."""
        for store in (self._default, *self._groups.values()):
            await store.check()

    async def close(self) -> None:
        """Close every store."""
        for store in (*self._groups.values(), self._default):
            await store.close()


def groups_of(blobs: BlobStore) -> GroupedBlobStore:
    """``blobs`` as a store of storage groups: itself, or (one store for every group) a
    view of it with no group of its own."""
    if isinstance(blobs, GroupedBlobStore):
        return blobs
    return GroupedBlobStore(blobs, {})


def free_bytes(store: BlobStore) -> int | None:
    """The bytes free for an unprivileged writer on the file system of a folder store
    (``statvfs``); None for a store whose space is not a file system's (S3)."""
    if not isinstance(store, FileBlobStore):
        return None
    found = os.statvfs(store.root)
    return found.f_bavail * found.f_frsize
