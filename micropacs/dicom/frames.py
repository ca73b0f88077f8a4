"""Single frames of stored images, for WADO-RS ``/frames`` and bulk data (PS3.18 8.7.3.3.2,
10.4.1.1.3).

A frame is sent as stored when the client accepts the stored syntax: the
raw bytes of an uncompressed frame, or the compressed bitstream of an
encapsulated one. Otherwise it is decoded to raw little endian samples.

Memory does not grow with the object: an uncompressed frame is a computable
byte range of the Pixel Data value (PS3.5 8.1.1, frames one after the other),
read from the file in chunks; an encapsulated frame is found through the Basic
or Extended Offset Table or by walking the fragments' item headers (PS3.5
A.4), and only that frame is read; a decoded frame is decoded alone.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from micropacs.dicom.transcode import UNCOMPRESSED
from micropacs.errors import InvalidInput, NotFound, UnsupportedTransfer

OCTET_STREAM = "application/octet-stream"
MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
CHUNK_BYTES = 1 << 20
"""How much of a frame is read from the file at a time."""
MAX_FRAME_LIST = 10_000
"""The longest frame list a request may name (after duplicates are removed)."""
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
"""(7FE0,0010) as it is written in a little endian file."""
RANGE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
"""Stored syntaxes whose frames are byte ranges of the file (not deflated, not big endian)."""


def media_type(syntax: str) -> str:
    """The single-frame media type of a transfer syntax (PS3.18 Table 8.7.3-2)."""
    return MEDIA_TYPES.get(syntax, OCTET_STREAM)


def parse_numbers(text: str) -> list[int]:
    """``1,3,5`` as frame numbers (1-based), each once, in the order first named.

    PS3.18 10.4.1.1.3 asks for "non duplicate frame numbers"; a repeated number
    is served once rather than refused, so ``1,1,1,…`` costs one frame.
    """
    try:
        numbers = list(dict.fromkeys(int(part) for part in text.split(",")))
    except ValueError:
        raise InvalidInput("the frame list is not comma-separated numbers") from None
    if not numbers or min(numbers) < 1:
        raise InvalidInput("frame numbers start at 1")
    if len(numbers) > MAX_FRAME_LIST:
        raise InvalidInput(f"at most {MAX_FRAME_LIST} frames per request")
    return numbers


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def check_numbers(numbers: Sequence[int], count: int) -> None:
    """Raise NotFound unless every frame number is within ``1..count``."""
    missing = [n for n in numbers if not 1 <= n <= count]
    if missing:
        shown = ", ".join(str(n) for n in missing[:10])
        raise NotFound(f"frames {shown} do not exist; this image has {count}")


class PixelSource:
    """The frames of one stored image, read from its file on demand.

    Open it with :func:`open_pixels`, take :meth:`parts`, and :meth:`close` it
    when the last chunk is sent. The parts must be consumed in order.
    """

    def __init__(
        self, path: Path, fp: BinaryIO, header: Dataset, value_at: int, mode: str, syntax: str
    ) -> None:
        self._path = path
        self._fp = fp
        self._header = header
        self._value_at = value_at
        self._mode = mode
        self.syntax = syntax
        """The transfer syntax the frames are sent in."""
        self.count = frame_count(header)
        """The number of frames of the image."""

    def parts(self, numbers: Sequence[int] | None) -> Iterator[Iterator[bytes]]:
        """One chunk iterator per part: a part per frame of ``numbers``; for ``None``
        (bulk data) the whole Pixel Data value as one part, or one part per
        compressed frame when sent as stored (PS3.18 8.7.3.3.2)."""
        if numbers is not None:
            check_numbers(numbers, self.count)
            return (self._frame(n) for n in numbers)
        every = range(1, self.count + 1)
        if self._mode == "encapsulated":
            return (self._frame(n) for n in every)
        return iter([(chunk for n in every for chunk in self._frame(n))])

    def close(self) -> None:
        """Close the file."""
        self._fp.close()

    def _frame(self, number: int) -> Iterator[bytes]:
        if self._mode == "range":
            return self._range(number)
        if self._mode == "encapsulated":
            return iter([self._fragments(number)])
        return iter([self._decoded(number)])

    def _range(self, number: int) -> Iterator[bytes]:
        size = frame_bytes(self._header)
        start = self._value_at + (number - 1) * size
        for offset in range(0, size, CHUNK_BYTES):
            self._fp.seek(start + offset)
            chunk = self._fp.read(min(CHUNK_BYTES, size - offset))
            if not chunk:
                raise UnsupportedTransfer("the stored pixel data is shorter than its frames")
            yield chunk

    def _fragments(self, number: int) -> bytes:
        self._fp.seek(self._value_at)
        extended = None
        if "ExtendedOffsetTable" in self._header:
            extended = (
                bytes(self._header.ExtendedOffsetTable),
                bytes(self._header.ExtendedOffsetTableLengths),
            )
        try:
            return get_frame(
                self._fp, number - 1, extended_offsets=extended, number_of_frames=self.count
            )
        except ValueError as exc:
            raise UnsupportedTransfer(f"cannot find frame {number}: {exc}") from exc

    def _decoded(self, number: int) -> bytes:
        try:
            return bytes(pixel_array(self._path, index=number - 1, raw=True).tobytes())
        except Exception as exc:
            raise UnsupportedTransfer(f"cannot decode frame {number}: {exc}") from exc


def frame_bytes(ds: Dataset) -> int:
    """The size of one uncompressed frame (PS3.5 8.1.1): Rows x Columns x Samples x Bits/8."""
    return (
        int(ds.Rows)
        * int(ds.Columns)
        * int(ds.get("SamplesPerPixel", 1))
        * (int(ds.BitsAllocated) // 8)
    )


def _value_offset(fp: BinaryIO, syntax: UID) -> int:
    """Where the Pixel Data value starts, ``fp`` being at its element header."""
    start = fp.tell()
    head = fp.read(12)
    if head[:4] != PIXEL_DATA_TAG:
        raise NotFound("this instance has no pixel data, so no frames")
    if syntax == ImplicitVRLittleEndian:
        return start + 8
    (length,) = struct.unpack("<I", head[8:12])
    if syntax.is_encapsulated and length != 0xFFFFFFFF:
        raise UnsupportedTransfer("encapsulated pixel data without undefined length")
    return start + 12


def open_pixels(path: Path, accepted: set[str]) -> PixelSource:
    """The frames of the image at ``path`` in a syntax of ``accepted`` (transfer syntax
    UIDs or ``*``, as stored); raises before anything is sent when none fits."""
    fp = path.open("rb")
    try:
        header = dcmread(fp, stop_before_pixels=True)
        stored = UID(header.file_meta.TransferSyntaxUID)
        if "Rows" not in header or "BitsAllocated" not in header:
            raise NotFound("this instance has no pixel data, so no frames")
        as_stored = "*" in accepted or stored in accepted
        if as_stored and stored.is_encapsulated:
            return PixelSource(path, fp, header, _value_offset(fp, stored), "encapsulated", stored)
        if as_stored or (stored in UNCOMPRESSED and accepted & UNCOMPRESSED):
            if int(header.BitsAllocated) % 8:
                raise UnsupportedTransfer("frames of 1-bit images are not served one by one")
        elif not accepted & UNCOMPRESSED:
            raise UnsupportedTransfer(
                f"frames are stored as {stored.name}; accept it, transfer-syntax=*, or "
                f"{ExplicitVRLittleEndian} (decoded)"
            )
        if stored in RANGE_SYNTAXES:
            value_at = _value_offset(fp, stored)
            return PixelSource(path, fp, header, value_at, "range", ExplicitVRLittleEndian)
        if not stored.is_deflated:
            _value_offset(fp, stored)  # only to answer 404 for an image without pixel data
        return PixelSource(path, fp, header, 0, "decode", ExplicitVRLittleEndian)
    except BaseException:
        fp.close()
        raise
