"""The embedded BlobStore: one file per object under a root directory.

An object is durable when :meth:`FileBlobStore.put` returns: its bytes are
written to a temporary file in ``root/.tmp``, fsynced, renamed into place
with :func:`os.replace` (atomic on POSIX, so a reader never sees half an
object) and the directory entry is fsynced too. A crash leaves at most a
stray temporary file, never a truncated object under its key.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from micropacs.errors import BlobStoreUnavailable, InvalidInput, NotFound
from micropacs.ports import BlobInfo

T = TypeVar("T")

TMP_DIR = ".tmp"
"""Folder under the root for objects being written (same file system, so renames are atomic)."""

_BUFFER = 1 << 20
_KEY = re.compile(r"[0-9A-Za-z._-]+(/[0-9A-Za-z._-]+)*")
_PREFIX = re.compile(r"[0-9A-Za-z._/-]*")
_MAX_KEY = 1024
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def check_key(key: str) -> str:
    """Refuse keys that could leave the root or name something odd.

    Keys are built from validated UIDs (PS3.5 9.1), so this is defence in
    depth: only ``[0-9A-Za-z._-]`` segments separated by ``/``, no segment
    starting with a dot (no ``..``, no hidden files, nothing in ``.tmp``).
    """
    if (
        not isinstance(key, str)
        or len(key) > _MAX_KEY
        or not _KEY.fullmatch(key)
        or ".." in key
        or any(part.startswith(".") for part in key.split("/"))
    ):
        raise InvalidInput(f"invalid object key {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    if (
        not isinstance(prefix, str)
        or len(prefix) > _MAX_KEY
        or not _PREFIX.fullmatch(prefix)
        or ".." in prefix
        or prefix.startswith("/")
        or "/." in prefix
        or prefix.startswith(".")
    ):
        raise InvalidInput(f"invalid object key prefix {prefix!r}")
    return prefix


def _unavailable(action: str, path: Path | str, exc: OSError) -> BlobStoreUnavailable:
    """A BlobStoreUnavailable telling the operator what to do about ``exc``."""
    where = f"{action} {path}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "the disk is full: free space or add storage, then retry"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        advice = "permission denied: give the micropacs user write access to the store's folder"
    elif exc.errno == errno.EROFS:
        advice = "the file system is read-only: check the mount and the disk's health"
    elif exc.errno == errno.EIO:
        advice = "I/O error: check the disk (kernel log, SMART) before trusting it again"
    else:
        advice = exc.strerror or str(exc)
    return BlobStoreUnavailable(f"cannot {where}: {advice}")


class FileBlobStore:
    """Objects as files under ``root``, keyed by relative path.

    ``fsync`` (default on) makes every put survive a power loss before it
    returns; turning it off trades that for speed (tests, throwaway stores).
    All blocking I/O runs in worker threads.
    """

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self._root = Path(root).absolute()
        self._tmp = self._root / TMP_DIR
        self._fsync = fsync
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable("create", self._tmp, exc) from exc

    @property
    def root(self) -> Path:
        """The folder holding every object."""
        return self._root

    @property
    def tmp_dir(self) -> Path:
        """Where files destined for :meth:`put_file` should be written (same file system)."""
        return self._tmp

    def path_of(self, key: str) -> Path:
        """The file that holds (or would hold) the object ``key``."""
        return self._root / check_key(key)

    async def put(self, key: str, source: BinaryIO, size: int) -> None:
        """Copy ``size`` bytes from ``source`` into the object ``key``; durable on return."""
        target = self.path_of(key)
        if size < 0:
            raise InvalidInput(f"negative object size {size}")
        await asyncio.to_thread(self._put, target, source, size)

    async def put_file(self, key: str, path: Path) -> None:
        """Move the file at ``path`` into the object ``key``; durable on return.

        ``path`` should be on the store's file system (e.g. under
        :attr:`tmp_dir`) so this is a rename; otherwise it is copied and removed.
        """
        target = self.path_of(key)
        await asyncio.to_thread(self._put_file, target, Path(path))

    async def read(self, key: str, chunk_size: int = _BUFFER) -> AsyncIterator[bytes]:
        """Stream the object's bytes in chunks; raises NotFound if absent."""
        path = self.path_of(key)

        def open_and_read() -> tuple[BinaryIO, bytes]:
            handle = self._open(key, path)
            return handle, handle.read(chunk_size)

        # One thread hop for the open and the first chunk, and none for the end-of-file
        # read when that chunk came short: most objects are smaller than one chunk.
        handle, chunk = await self._run(open_and_read, path=path)
        try:
            while chunk:
                yield chunk
                if len(chunk) < chunk_size:
                    return
                chunk = await self._run(handle.read, chunk_size, action="read", path=path)
        finally:
            handle.close()

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """The object's own file (no copy); do not modify or remove it."""
        path = self.path_of(key)
        if await self._stat(path) is None:
            raise NotFound(f"no object {key!r}")
        yield path

    async def stat(self, key: str) -> BlobInfo | None:
        """The object's size, or None if it does not exist."""
        path = self.path_of(key)
        size = await self._stat(path)
        if size is None:
            return None
        modified = await self._run(lambda: path.stat().st_mtime, path=path)
        return BlobInfo(key=key, size=size, modified=datetime.fromtimestamp(modified, UTC))

    async def delete(self, key: str) -> None:
        """Remove the object; removing an absent one is not an error."""
        path = self.path_of(key)
        await asyncio.to_thread(self._delete, path)

    async def iterate(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key starting with ``prefix``, listing one folder at a time."""
        _check_prefix(prefix)
        # Start at the deepest folder the prefix names fully, not at the root.
        base, _, _ = prefix.rpartition("/")
        pending = [self._root / base if base else self._root]
        while pending:
            folder = pending.pop()
            entries = await asyncio.to_thread(self._list, folder)
            for name, is_dir in entries:
                if name.startswith("."):
                    continue  # .tmp and anything else no key can name
                full = folder / name
                if is_dir:
                    relative = full.relative_to(self._root).as_posix() + "/"
                    if relative.startswith(prefix) or prefix.startswith(relative):
                        pending.append(full)
                    continue
                key = full.relative_to(self._root).as_posix()
                if key.startswith(prefix):
                    yield key

    async def check(self) -> None:
        """Write, fsync and remove a probe file; raise BlobStoreUnavailable if that fails."""
        await asyncio.to_thread(self._probe)

    async def close(self) -> None:
        """Nothing to release: files are opened per call."""

    # -- blocking parts, run in worker threads ------------------------------------------------

    async def _run(
        self, func: Callable[..., T], *args: object, action: str = "read", path: Path | None = None
    ) -> T:
        try:
            return await asyncio.to_thread(func, *args)
        except OSError as exc:
            raise _unavailable(action, path or self._root, exc) from exc

    def _open(self, key: str, path: Path) -> BinaryIO:
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no object {key!r}") from None

    async def _stat(self, path: Path) -> int | None:
        def stat() -> int | None:
            try:
                info = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            return info.st_size if path.is_file() else None

        return await self._run(stat, path=path)

    def _put(self, target: Path, source: BinaryIO, size: int) -> None:
        fd, name = self._mkstemp()
        temp = Path(name)
        try:
            try:
                _copy(source, fd, size)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._install(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise _unavailable("store", target, exc) from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _put_file(self, target: Path, path: Path) -> None:
        try:
            if self._fsync:
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            self._install(path, target)
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == path:
                raise InvalidInput(f"no file to store at {path}") from exc
            raise _unavailable("store", target, exc) from exc
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise _unavailable("store", target, exc) from exc
            # Not on our file system: copy (durably) instead, then drop the original.
            with path.open("rb") as source:
                self._put(target, source, os.fstat(source.fileno()).st_size)
            path.unlink()

    def _install(self, temp: Path, target: Path) -> None:
        """Rename ``temp`` over ``target`` and make the rename durable (raises OSError)."""
        self._makedirs(target.parent)
        temp.replace(target)
        if self._fsync:
            _fsync_dir(target.parent)

    def _makedirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, fsyncing each new entry's parent."""
        missing: list[Path] = []
        current = folder
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            if self._fsync:
                _fsync_dir(new.parent)

    def _mkstemp(self) -> tuple[int, str]:
        try:
            return tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".part")
        except FileNotFoundError:
            # Someone removed .tmp under us: recreate it once.
            self._tmp.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".part")
        except OSError as exc:
            raise _unavailable("write into", self._tmp, exc) from exc

    def _delete(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            if self._fsync and path.parent.is_dir():
                _fsync_dir(path.parent)
        except (NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _unavailable("delete", path, exc) from exc

    def _list(self, folder: Path) -> list[tuple[str, bool]]:
        try:
            with os.scandir(folder) as entries:
                return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _unavailable("list", folder, exc) from exc

    def _probe(self) -> None:
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="probe-")
            try:
                os.write(fd, b"micropacs")
                os.fsync(fd)
            finally:
                os.close(fd)
                Path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise _unavailable("write into", self._tmp, exc) from exc


def _copy(source: BinaryIO, fd: int, size: int) -> None:
    """Copy exactly ``size`` bytes to ``fd``, in the kernel when ``source`` is a real file."""
    copied = _copy_in_kernel(source, fd, size)
    remaining = size - copied
    while remaining:
        chunk = source.read(min(_BUFFER, remaining))
        if not chunk:
            raise InvalidInput(f"source ended after {size - remaining} of {size} bytes")
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        remaining -= len(chunk)


def _copy_in_kernel(source: BinaryIO, fd: int, size: int) -> int:
    """Bytes copied with copy_file_range or sendfile; 0 when ``source`` is no plain file."""
    try:
        src = source.fileno()
        start = source.tell()
    except (AttributeError, OSError, ValueError):
        # io.UnsupportedOperation (BytesIO, sockets, pipes) is both OSError and ValueError.
        return 0
    copied = 0
    for method in ("copy_file_range", "sendfile"):
        try:
            while copied < size:
                if method == "copy_file_range":
                    done = os.copy_file_range(src, fd, size - copied, start + copied)
                else:
                    done = os.sendfile(fd, src, start + copied, size - copied)
                if done == 0:
                    break
                copied += done
            break
        except (AttributeError, OSError) as exc:
            # Some file systems (and kernels) refuse one or both; fall back to the next.
            if isinstance(exc, OSError) and exc.errno not in _NO_KERNEL_COPY:
                raise
    source.seek(start + copied)
    return copied


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
