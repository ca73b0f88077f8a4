"""multipart/related bodies (RFC 2387) as DICOMweb uses them (PS3.18 8.6.1.2).

Responses are written part by part as the objects stream from the BlobStore;
request bodies (STOW-RS) are split into files on disk as they arrive, so
neither side ever holds a whole object in memory.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from micropacs.errors import InvalidInput

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


@dataclass(frozen=True)
class Part:
    """One received part, saved to ``path``."""

    content_type: str
    path: Path


class _Splitter:
    """Splits a body into parts while it streams in, writing each to a file."""

    def __init__(self, boundary: str, folder: Path) -> None:
        self._delimiter = b"\r\n--" + boundary.encode()
        self._folder = folder
        self._buffer = CRLF  # so the first delimiter looks like every later one
        self._state = "preamble"
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._content_type = ""
        self.parts: list[Part] = []

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        if self._state == "done":
            self._buffer = b""
            return False
        if self._state == "headers":
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > 16384:
                    raise InvalidInput("multipart part headers longer than 16 KiB")
                return False
            self._start_part(self._buffer[:end])
            self._buffer = self._buffer[end + 4 :]
            self._state = "body"
            return True
        at = self._buffer.find(self._delimiter)
        if at < 0:
            # Keep what could be the start of a delimiter split across chunks.
            keep = len(self._delimiter) + 2
            if self._state == "body" and len(self._buffer) > keep:
                self._write(self._buffer[:-keep])
                self._buffer = self._buffer[-keep:]
            return False
        after = self._buffer[at + len(self._delimiter) : at + len(self._delimiter) + 2]
        if len(after) < 2:
            return False
        if self._state == "body":
            self._write(self._buffer[:at])
            self._end_part()
        self._buffer = self._buffer[at + len(self._delimiter) + 2 :]
        if after == b"--":
            self._state = "done"
        elif after == CRLF:
            self._state = "headers"
        else:
            raise InvalidInput("malformed multipart delimiter")
        return True

    def _start_part(self, raw: bytes) -> None:
        self._content_type = ""
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                self._content_type = value.strip()
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in _end_part
            dir=self._folder, prefix="stow-", suffix=".part", delete=False
        )

    def _write(self, data: bytes) -> None:
        if self._file is not None and data:
            self._file.write(data)

    def _end_part(self) -> None:
        assert self._file is not None
        self._file.close()
        self.parts.append(Part(self._content_type, Path(self._file.name)))
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


async def split(body: AsyncIterable[bytes], boundary: str, folder: Path) -> list[Part]:
    """Save every part of a multipart/related ``body`` under ``folder``.

    The caller owns the files (and deletes them). A malformed body raises
    :class:`InvalidInput` and leaves no file behind.
    """
    splitter = _Splitter(boundary, folder)
    try:
        async for chunk in body:
            splitter.feed(chunk)
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
