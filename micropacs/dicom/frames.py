"""Single frames of stored images, for WADO-RS ``/frames`` (PS3.18 8.7.3.3.2, 10.4.1.1.3).

A frame is sent as stored when the client accepts the stored syntax: the
raw bytes of an uncompressed frame, or the compressed bitstream of an
encapsulated one. Otherwise it is decoded to raw little endian samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian

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


def media_type(syntax: str) -> str:
    """The single-frame media type of a transfer syntax (PS3.18 Table 8.7.3-2)."""
    return MEDIA_TYPES.get(syntax, OCTET_STREAM)


def parse_numbers(text: str) -> list[int]:
    """``1,3,5`` as frame numbers (1-based)."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(f"frame list {text!r} is not comma-separated numbers") from None
    if not numbers or min(numbers) < 1:
        raise InvalidInput("frame numbers start at 1")
    return numbers


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def read_frames(
    path: Path, numbers: Sequence[int] | None, accepted: set[str]
) -> tuple[str, list[bytes]]:
    """The transfer syntax sent and the bytes of frames ``numbers`` (None: every frame) of
    the image at ``path``.

    ``accepted`` holds transfer syntax UIDs or ``*`` (as stored).
    """
    ds = dcmread(path)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data, so no frames")
    count = frame_count(ds)
    numbers = range(1, count + 1) if numbers is None else numbers
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"frames {missing} do not exist; this image has {count}")
    stored = UID(ds.file_meta.TransferSyntaxUID)
    as_stored = "*" in accepted or stored in accepted
    if as_stored and stored.is_encapsulated:
        every = list(generate_frames(ds.PixelData, number_of_frames=count))
        return stored, [every[n - 1] for n in numbers]
    if as_stored or (stored in UNCOMPRESSED and accepted & UNCOMPRESSED):
        if int(ds.BitsAllocated) % 8:
            raise UnsupportedTransfer("frames of 1-bit images are not served one by one")
        size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * ds.BitsAllocated // 8
        return ExplicitVRLittleEndian, [ds.PixelData[(n - 1) * size : n * size] for n in numbers]
    if not accepted & UNCOMPRESSED:
        raise UnsupportedTransfer(
            f"frames are stored as {stored.name}; accept it, transfer-syntax=*, or "
            f"{ExplicitVRLittleEndian} (decoded)"
        )
    try:
        decoded = [pixel_array(path, index=n - 1, raw=True).tobytes() for n in numbers]
    except Exception as exc:
        raise UnsupportedTransfer(f"cannot decode {stored.name} frames: {exc}") from exc
    return ExplicitVRLittleEndian, decoded
