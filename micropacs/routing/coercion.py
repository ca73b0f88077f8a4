"""Coercing attributes of a received object before it is stored (docs/routing.md).

A rule's ``coerce`` actions change the object's dataset, in the rules' order: ``set`` an
attribute to a value (with the VR of the data dictionary, PS3.6 6, or of the private
dictionary for a private attribute whose creator is in the object, PS3.5 7.8), ``copy``
one attribute's value into another, ``remove`` one. :func:`apply` does it to a dataset.

:func:`coerce_file` does it to a received Part 10 file (PS3.10 7.1) without reading its
bulk data: the bytes up to the end of the File Meta group are kept as they are (the
transfer syntax and the object's UIDs do not change), the dataset up to Pixel Data is read
and written again in the same transfer syntax with the changes, and everything from Pixel
Data on (or its float and double variants) is copied as bytes, never decoded. The new
file's SHA-256 is taken as it is written. Only a deflated dataset (PS3.5 A.5), which has no
boundary to copy from, is read whole and written again.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from micropacs.checksums import CHUNK, HashingWriter
from micropacs.errors import InvalidInput, NotDicom, Unavailable

BULK_START = 0x7FE00008
"""Float Pixel Data (7FE0,0008), the first of the pixel data elements: what is at or after
it is copied as bytes, so no coercion may name it or anything after it."""

_INTEGERS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOATS = frozenset({"FL", "FD"})
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_UNSETTABLE = frozenset({"SQ", "AT"})


@dataclass(frozen=True)
class Coercion:
    """Change one attribute before storing: ``set`` it to ``value``, ``copy`` the value of
    ``source`` into it, or ``remove`` it. ``tag`` is the attribute changed (8 hex digits)."""

    action: Literal["set", "copy", "remove"]
    tag: str
    value: str = ""
    source: str = ""


def dictionary_vr(tag: int) -> str:
    """The data dictionary's VR of ``tag`` (PS3.6 6), "UN" for one it does not know; the
    first choice of an ambiguous one ("US or SS": "US")."""
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    return vr.split(" or ", 1)[0]


def typed(vr: str, text: str) -> object:
    """``text`` (values separated by backslashes, PS3.5 6.4) as a value of ``vr`` ("": no
    value); :class:`~micropacs.errors.InvalidInput` if it is not one."""
    if vr in _UNSETTABLE:
        raise InvalidInput(f"an attribute of VR {vr} cannot be given a text value")
    if not text:
        return None if vr in _INTEGERS | _FLOATS | _BYTES else ""  # present, empty
    parts = text.split("\\")
    try:
        if vr in _INTEGERS:
            numbers: list[int] = [int(p) for p in parts]
            return numbers[0] if len(numbers) == 1 else numbers
        if vr in _FLOATS:
            floats = [float(p) for p in parts]
            return floats[0] if len(floats) == 1 else floats
    except ValueError:
        raise InvalidInput(f"{text!r} is not a value of VR {vr}") from None
    if vr in _BYTES:
        raw = text.encode("ascii", "replace")
        return raw + b" " if len(raw) % 2 else raw
    return text


def apply(ds: Dataset, coercions: Sequence[Coercion]) -> None:
    """Make ``coercions`` to ``ds`` (top level), one after the other."""
    for coercion in coercions:
        tag = Tag(int(coercion.tag, 16))
        if coercion.action == "remove":
            if tag in ds:
                del ds[tag]
        elif coercion.action == "set":
            _set(ds, tag, coercion.value)
        else:
            source = ds.get(Tag(int(coercion.source, 16)))
            if source is not None:  # copying what is absent changes nothing
                _set(ds, tag, _text(source))


def _vr_of(ds: Dataset, tag: BaseTag) -> str:
    if not tag.is_private:
        return dictionary_vr(int(tag))
    creator = ds.get(Tag(tag.group, tag.element >> 8)) if tag.element >= 0x1000 else None
    if creator is not None and isinstance(creator.value, str):
        try:
            return str(private_dictionary_VR(int(tag), creator.value))
        except KeyError:
            pass
    present = ds.get(tag)
    if present is not None and present.VR != "UN":
        return str(present.VR)
    return "LO" if 0x0010 <= tag.element <= 0x00FF else "UN"


def _set(ds: Dataset, tag: BaseTag, text: str) -> None:
    vr = _vr_of(ds, tag)
    ds[tag] = DataElement(tag, vr, typed(vr, text))


def _text(element: DataElement) -> str:
    """An element's value as the text a ``set`` takes."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").rstrip("\x00 ")
    if element.VM > 1:
        return "\\".join(str(v) for v in value)
    return str(value)


def _at_bulk(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) >= BULK_START


def coerce_file(source: Path, coercions: Sequence[Coercion], out: Path) -> str:
    """Write ``source`` with ``coercions`` made to ``out``; the SHA-256 of ``out``.

    Raises :class:`~micropacs.errors.NotDicom` when pydicom cannot read ``source`` or
    write the changed dataset, :class:`~micropacs.errors.InvalidInput` when a copied value
    is not one of its new attribute's VR, :class:`~micropacs.errors.Unavailable` (retryable)
    when the file system fails."""
    try:
        with source.open("rb") as fp, out.open("wb") as raw:
            sink = HashingWriter(raw)
            _coerce(fp, coercions, sink)
            raw.flush()
            return sink.sha256()
    except OSError as exc:
        raise Unavailable(f"the coerced copy cannot be written: {exc.strerror}") from exc
    except (
        InvalidDicomError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as exc:  # pydicom's ways of failing on a dataset it cannot take
        raise NotDicom(f"the coerced object cannot be written: {type(exc).__name__}") from exc


def _coerce(fp: BinaryIO, coercions: Sequence[Coercion], sink: HashingWriter) -> None:
    read_preamble(fp, force=False)
    meta = _read_file_meta_info(fp)
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not syntax.is_transfer_syntax:
        raise ValueError("unknown transfer syntax")
    if syntax.is_deflated:
        fp.seek(0)
        whole = dcmread(fp)
        apply(whole, coercions)
        buffer = DicomBytesIO()
        whole.save_as(buffer, enforce_file_format=False)
        sink.write(buffer.getvalue())
        return
    start = fp.tell()
    ds = read_dataset(fp, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=_at_bulk)
    bulk = fp.tell()
    apply(ds, coercions)
    fp.seek(0)
    sink.write(fp.read(start))  # preamble and File Meta group, as received
    header = DicomBytesIO()  # the dataset before its bulk data: small
    header.is_little_endian = syntax.is_little_endian
    header.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(header, ds)
    sink.write(header.getvalue())
    fp.seek(bulk)
    shutil.copyfileobj(fp, sink, CHUNK)
