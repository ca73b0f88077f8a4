"""SHA-256 of stored objects, computed while their bytes pass by (PS3.4 J.3.2.1.1).

Storage Commitment promises that what the archive holds is what it received:
an instance is committed only when the object the BlobStore holds now hashes
to the digest recorded when it was stored (``InstanceRecord.sha256``). That
digest is taken of the exact bytes put in the BlobStore, on their way in, so
the store path reads nothing twice: :class:`HashingWriter` as a received file
is written (C-STORE, STOW-RS), :class:`HashingReader` as the store reads a
file it copies (``micropacs import``). :func:`file_sha256` reads a file only
where no receiver saw the bytes (a copy compressed at rest);
:func:`blob_sha256` reads an object back for the commitment's check.

CPU per 512 KB CT image, measured with ``python -m bench.checksum_cost``:
see docs/storage-commitment.md, "What it costs".
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any, BinaryIO

from micropacs.ports import BlobStore

CHUNK = 1 << 20
"""Bytes read at once where a file or object is read only to be hashed."""


def new_digest() -> Any:
    """A fresh SHA-256 (hashlib's object, which releases the GIL on large updates)."""
    return hashlib.sha256()


class HashingWriter:
    """A binary file being written that hashes every byte written through it.

    It forwards what file users call (``write``, ``flush``, ``close``, ``name``,
    ``file``) to the wrapped file; write everything through :meth:`write`.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._digest = new_digest()
        self.written = 0
        """Bytes written so far."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Hash ``data`` and write it."""
        self._digest.update(data)
        self.written += len(data)
        return self._file.write(data)

    def sha256(self) -> str:
        """The SHA-256 of everything written so far, as 64 lowercase hex digits."""
        return str(self._digest.hexdigest())

    @property
    def name(self) -> Any:
        """The wrapped file's name (its path, for a named temporary file)."""
        return self._file.name

    @property
    def file(self) -> Any:
        """The wrapped file's own file object, where it has one (a temporary file's)."""
        return getattr(self._file, "file", self._file)

    def flush(self) -> None:
        """Flush the wrapped file."""
        self._file.flush()

    def close(self) -> None:
        """Close the wrapped file."""
        self._file.close()


class HashingReader:
    """A binary source that hashes every byte read from it (by ``read``)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._digest = new_digest()
        self.count = 0
        """Bytes read so far."""

    def read(self, size: int = -1) -> bytes:
        """Read from the source, hashing what is returned."""
        data = self._source.read(size)
        self._digest.update(data)
        self.count += len(data)
        return data

    def sha256(self) -> str:
        """The SHA-256 of everything read so far, as 64 lowercase hex digits."""
        return str(self._digest.hexdigest())


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` (it blocks: run it off the event loop)."""
    digest = new_digest()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return str(digest.hexdigest())


async def blob_sha256(blobs: BlobStore, key: str) -> str:
    """The SHA-256 of the object ``key`` as the store holds it now (NotFound if absent)."""
    digest = new_digest()
    async for chunk in blobs.read(key, CHUNK):
        digest.update(chunk)
    return str(digest.hexdigest())
