"""Reading received Part 10 files (PS3.10 7) without loading their bulk data.

pydicom reads a truncated file without complaint (a value cut short is just
shorter), so :func:`check_complete` walks the element structure (PS3.5 7.1,
7.5) and fails if any element claims more bytes than the file has.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.uid import UID

from micropacs.errors import NotDicom

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def read_header(path: Path) -> Dataset:
    """The dataset at ``path`` without its pixel data, after checking it is whole.

    Raises :class:`~micropacs.errors.NotDicom` for anything that is not a
    complete DICOM Part 10 file.
    """
    try:
        ds = dcmread(path, stop_before_pixels=True, defer_size="16 KB")
    except Exception as exc:
        raise NotDicom(f"not a DICOM dataset: {exc}") from exc
    if not ds.file_meta or "TransferSyntaxUID" not in ds.file_meta or len(ds) == 0:
        raise NotDicom("not a DICOM dataset: no transfer syntax or no elements")
    value = ds.file_meta.TransferSyntaxUID
    transfer_syntax = UID(value) if isinstance(value, str) else UID("")  # not several values
    if not transfer_syntax.is_transfer_syntax:
        # pydicom cannot say how such a dataset is encoded: it raises ValueError when asked
        raise NotDicom("not a DICOM dataset: its Transfer Syntax UID names no transfer syntax")
    check_complete(path, transfer_syntax)
    return ds


def check_complete(path: Path, transfer_syntax: UID) -> None:
    """Raise NotDicom if the dataset in the Part 10 file at ``path`` is truncated."""
    if transfer_syntax.is_deflated or not transfer_syntax.is_little_endian:
        return  # inflating or byte-swapping is pydicom's job; it fails loudly on these
    size = path.stat().st_size
    with path.open("rb") as fp:
        fp.seek(128 + 4)
        _skip_meta(fp)
        _walk(fp, size, implicit=transfer_syntax.is_implicit_VR, nested=False)


def _skip_meta(fp: BinaryIO) -> None:
    """Skip the File Meta group (always explicit VR little endian)."""
    while True:
        start = fp.tell()
        header = fp.read(8)
        if len(header) < 8:
            raise NotDicom("truncated file meta information")
        group = struct.unpack("<H", header[:2])[0]
        if group != 0x0002:
            fp.seek(start)
            return
        vr = header[4:6]
        if vr in LONG_VRS:
            (length,) = struct.unpack("<I", fp.read(4))
        else:
            (length,) = struct.unpack("<H", header[6:8])
        fp.seek(length, 1)


def _element_header(fp: BinaryIO, implicit: bool) -> tuple[int, bytes, int] | None:
    raw = fp.read(8)
    if not raw:
        return None
    if len(raw) < 8:
        raise NotDicom("truncated dataset: incomplete element header")
    group, element = struct.unpack("<HH", raw[:4])
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, b"", struct.unpack("<I", raw[4:8])[0]
    vr = raw[4:6]
    if vr in LONG_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            raise NotDicom("truncated dataset: incomplete element header")
        return tag, vr, struct.unpack("<I", extra)[0]
    return tag, vr, struct.unpack("<H", raw[6:8])[0]


def _walk(fp: BinaryIO, size: int, implicit: bool, nested: bool) -> None:
    """Walk elements until EOF (top level) or an item/sequence delimiter (nested)."""
    while True:
        header = _element_header(fp, implicit)
        if header is None:
            if nested:
                raise NotDicom("truncated dataset: sequence not closed")
            return
        tag, vr, length = header
        if tag in (ITEM_END, SEQUENCE_END):
            if not nested:
                raise NotDicom("malformed dataset: delimiter outside a sequence")
            return
        if length != UNDEFINED:
            if fp.tell() + length > size:
                raise NotDicom(f"truncated dataset: element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            fp.seek(length, 1)
            continue
        if tag == PIXEL_DATA or vr in (b"OB", b"OW", b"UN"):
            _walk_fragments(fp, size)
        else:
            _walk_items(fp, size, implicit)


def _walk_items(fp: BinaryIO, size: int, implicit: bool) -> None:
    """Walk the items of an undefined-length sequence up to its delimiter."""
    while True:
        header = _element_header(fp, True)
        if header is None:
            raise NotDicom("truncated dataset: sequence not closed")
        tag, _, length = header
        if tag == SEQUENCE_END:
            return
        if tag != ITEM:
            raise NotDicom("malformed dataset: expected a sequence item")
        if length == UNDEFINED:
            _walk(fp, size, implicit, nested=True)
        elif fp.tell() + length > size:
            raise NotDicom("truncated dataset: sequence item")
        else:
            fp.seek(length, 1)


def _walk_fragments(fp: BinaryIO, size: int) -> None:
    """Walk encapsulated pixel data fragments (PS3.5 A.4) up to the delimiter."""
    while True:
        header = _element_header(fp, True)
        if header is None:
            raise NotDicom("truncated dataset: encapsulated pixel data not closed")
        tag, _, length = header
        if tag == SEQUENCE_END:
            return
        if tag != ITEM or length == UNDEFINED or fp.tell() + length > size:
            raise NotDicom("truncated dataset: encapsulated pixel data fragment")
        fp.seek(length, 1)
