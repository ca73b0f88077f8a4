"""multipart/related bodies (RFC 2387) as DICOMweb uses them (PS3.18 8.6.1.2).

Responses are written part by part as the objects stream from the BlobStore;
request bodies (STOW-RS) are split into files on disk as they arrive, so
neither side ever holds a whole object in memory.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from micropacs.checksums import new_digest
from micropacs.errors import InvalidInput, RequestTimeout, RequestTooLarge

CRLF = b"\r\n"


def new_boundary() -> str:
    """A boundary no DICOM object will contain by chance."""
    return f"micropacs-{uuid.uuid4().hex}"


def parameters(content_type: str) -> tuple[str, dict[str, str]]:
    """The media type and its parameters (names lower-cased, quotes removed)."""
    media, *rest = content_type.split(";")
    found: dict[str, str] = {}
    for item in rest:
        name, _, value = item.partition("=")
        if name.strip():
            found[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), found


def part_head(boundary: str, content_type: str, location: str | None = None) -> bytes:
    """The delimiter and headers that open one part."""
    head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
    if location:
        head += f"Content-Location: {location}\r\n"
    return head.encode() + CRLF


def closing(boundary: str) -> bytes:
    """The close delimiter that ends the body."""
    return f"--{boundary}--\r\n".encode()


GiB = 1 << 30
HEADERS_LIMIT = 16384
"""Longest header block of one part, bytes."""


@dataclass(frozen=True)
class Limits:
    """What one request body may hold and how long it may take to arrive.

    The defaults allow a large CT or MR study in one request (a 2,000-slice CT is about
    1 GiB) while bounding the disk, files and time one client can take.
    """

    max_bytes: int = 4 * GiB
    max_parts: int = 10_000
    timeout: float = 3600.0


@dataclass(frozen=True)
class Part:
    """One received part, saved to ``path``."""

    content_type: str
    path: Path
    sha256: str = ""
    """The SHA-256 of the saved body, hashed as it was written (Storage Commitment)."""


class _Splitter:
    """Splits a body into parts while it streams in, writing each to a file.

    Linear in the body: each search resumes where the last one stopped, less a
    delimiter's length, and the buffer keeps no more than one chunk plus that.
    """

    def __init__(self, boundary: str, folder: Path, limits: Limits) -> None:
        self._delimiter = b"\r\n--" + boundary.encode()
        self._folder = folder
        self._limits = limits
        self._buffer = bytearray(CRLF)  # so the first delimiter looks like every later one
        self._pos = 0  # the first byte not yet consumed
        self._scan = 0  # where the search for the next marker resumes
        self._received = 0
        self._state = "preamble"
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._digest = new_digest()
        self._content_type = ""
        self.parts: list[Part] = []

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._limits.max_bytes:
            raise RequestTooLarge(f"the body is larger than {self._limits.max_bytes} bytes")
        if self._state == "done":
            return  # the epilogue, ignored (RFC 2046 5.1.1)
        self._buffer += chunk
        while self._step():
            pass
        del self._buffer[: self._pos]
        self._scan -= self._pos
        self._pos = 0

    def _step(self) -> bool:
        if self._state == "done":
            return False
        if self._state == "headers":
            return self._headers()
        buffer, pos = self._buffer, self._pos
        at = buffer.find(self._delimiter, self._scan)
        if at < 0:
            # Keep what could be the start of a delimiter split across chunks.
            keep = max(pos, len(buffer) - len(self._delimiter) + 1)
            self._write(pos, keep)
            self._pos = self._scan = keep
            return False
        self._write(pos, at)
        self._pos = self._scan = at
        after = at + len(self._delimiter)
        if len(buffer) < after + 2:
            return False
        marker = bytes(buffer[after : after + 2])
        if self._state == "body":
            self._end_part()
        if marker == b"--":
            self._state = "done"
            self._pos = self._scan = len(buffer)
            return False
        if marker != CRLF:
            raise InvalidInput("malformed multipart delimiter")
        self._state = "headers"
        self._pos = self._scan = after + 2
        return True

    def _headers(self) -> bool:
        buffer, pos = self._buffer, self._pos
        if len(buffer) - pos < 2:
            return False
        if buffer[pos : pos + 2] == CRLF:
            end, body = pos, pos + 2  # a part without headers
        else:
            end = buffer.find(b"\r\n\r\n", self._scan)
            body = end + 4
        if end < 0:
            if len(buffer) - pos > HEADERS_LIMIT:
                raise InvalidInput(f"multipart part headers longer than {HEADERS_LIMIT} bytes")
            self._scan = max(pos, len(buffer) - 3)
            return False
        self._start_part(bytes(buffer[pos:end]))
        self._pos = self._scan = body
        self._state = "body"
        return True

    def _start_part(self, raw: bytes) -> None:
        if len(self.parts) >= self._limits.max_parts:
            raise RequestTooLarge(f"the body has more than {self._limits.max_parts} parts")
        self._content_type = ""
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                self._content_type = value.strip()
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in _end_part
            dir=self._folder, prefix="stow-", suffix=".part", delete=False
        )
        self._digest = new_digest()

    def _write(self, start: int, stop: int) -> None:
        if self._state == "body" and self._file is not None and stop > start:
            with memoryview(self._buffer) as view:
                self._digest.update(view[start:stop])
                self._file.write(view[start:stop])

    def _end_part(self) -> None:
        assert self._file is not None
        self._file.close()
        self.parts.append(
            Part(self._content_type, Path(self._file.name), str(self._digest.hexdigest()))
        )
        self._file = None

    def finish(self) -> list[Part]:
        if self._state != "done":
            self.discard()
            raise InvalidInput("the multipart body ended before its close delimiter")
        return self.parts

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None
        for part in self.parts:
            part.path.unlink(missing_ok=True)


async def split(
    body: AsyncIterable[bytes], boundary: str, folder: Path, limits: Limits = Limits()
) -> list[Part]:
    """Save every part of a multipart/related ``body`` under ``folder``.

    The caller owns the files (and deletes them). A malformed body raises
    :class:`InvalidInput`, one over ``limits`` :class:`RequestTooLarge` (more bytes
    or parts) or :class:`RequestTimeout` (still arriving after ``limits.timeout``
    seconds); none leaves a file behind.
    """
    splitter = _Splitter(boundary, folder, limits)
    try:
        async with asyncio.timeout(limits.timeout):
            async for chunk in body:
                splitter.feed(chunk)
    except TimeoutError:
        splitter.discard()
        raise RequestTimeout(f"the body took longer than {limits.timeout:g} s") from None
    except BaseException:
        splitter.discard()
        raise
    return splitter.finish()


async def join(
    boundary: str, parts: AsyncIterable[tuple[str, str | None, AsyncIterator[bytes]]]
) -> AsyncIterator[bytes]:
    """A multipart/related body from (content type, location, chunks) parts.

    A part's head goes out together with the CRLF closing the part before, and
    object chunks go out as they are: joining them to the heads would copy every
    object once more (measured: 25% slower retrieval).
    """
    tail = b""
    async for content_type, location, chunks in parts:
        lead = tail + part_head(boundary, content_type, location)
        async for chunk in chunks:
            if lead:
                yield lead
                lead = b""
            yield chunk
        if lead:
            yield lead  # an empty part
        tail = CRLF
    yield tail + closing(boundary)
