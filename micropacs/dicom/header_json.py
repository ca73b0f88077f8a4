"""A received Part 10 file's header as DICOM JSON, read once (PS3.10 7.1, PS3.5 7, PS3.18 F.2).

:func:`header_of` gives what storing an object needs of it: its header in the
DICOM JSON model without bulk data, equal to what
``to_json(read_header(path))`` gives, and its transfer syntax. For the
little-endian transfer syntaxes (implicit and explicit VR, and the
encapsulated ones, whose dataset is explicit VR, PS3.5 A.4)
:func:`fast_header` gets there in one pass over the file: the preamble and
File Meta group (always explicit VR little endian, PS3.10 7.1), then the
dataset's elements (PS3.5 7.1, 7.5), converting each value as pydicom would
and seeking over Pixel Data and other bulk values instead of reading them.

It walks the whole element structure, so a file that
:func:`~micropacs.dicom.part10.check_complete` would find truncated never
passes it. Anything it is not sure to reproduce exactly (big endian, deflated,
a value with ISO 2022 escape sequences, a VR or value pydicom treats
specially, any structural oddity, a truncated file) makes it return None, and
:func:`header_of` then takes pydicom's path, which also gives the exact
:class:`~micropacs.errors.NotDicom` reason for a file that is not whole.

CPU per file, measured with ``python -m bench.header_cost`` (one process, files
in the page cache): 200 CT 512x512, 0.18 ms against 1.44 ms for
``read_header`` and ``to_json``; MR 256x256 0.18 against 1.48; multi-frame
16x512x512 0.14 against 1.12.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.filewriter import _AMBIGUOUS_US_SS_TAGS  # pydicom's own list, so both agree
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.uid import UID

from micropacs.dicom import tags
from micropacs.dicom.json_model import BULK_TAGS, BULK_THRESHOLD, DicomJson, to_json
from micropacs.dicom.part10 import read_header

_CHUNK = 32 * 1024
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_STOP = frozenset({0x7FE00008, 0x7FE00009, _PIXEL_DATA})
"""Where pydicom's ``stop_before_pixels`` ends the top-level dataset."""
_CHARSET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103
_IMPLICIT_LE = "1.2.840.10008.1.2"
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT"})
_SHORT_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH"}
    | {"SL", "SS", "ST", "TM", "UI", "UL", "US"}
)
_VRS = {vr.encode(): vr for vr in _LONG_VRS | _SHORT_VRS | {"UV"}}
_LONG = _LONG_VRS | {"UV"}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBERS = {
    "FL": ("f", 4),
    "FD": ("d", 8),
    "SL": ("l", 4),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "US": ("H", 2),
    "SV": ("q", 8),
    "UV": ("Q", 8),
}
_SPLIT_STRINGS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_SPLIT_TEXT = frozenset({"LO", "SH", "UC"})
_SINGLE_TEXT = frozenset({"LT", "ST", "UT"})
_CHARSET_VRS = _SPLIT_TEXT | _SINGLE_TEXT | {"PN"}
_DS = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_IS = re.compile(r"[+-]?[0-9]+")
_DEFAULT_CODEC = python_encoding[""]
_ESC = 0x1B
_ABSENT = object()


class _Fallback(Exception):
    """Not sure to give what pydicom gives: use the pydicom path."""


@dataclass(frozen=True, slots=True)
class Header:
    """What storing a received object needs of its header."""

    json: DicomJson
    """The dataset as DICOM JSON (PS3.18 F.2), without file meta, group lengths or bulk data."""
    transfer_syntax_uid: str
    """Transfer Syntax UID (0002,0010) of the File Meta group."""

    @property
    def is_image(self) -> bool:
        """Whether the dataset has Rows (0028,0010), as an image does."""
        return tags.ROWS in self.json

    def value(self, key: str) -> object:
        """The value of attribute ``key`` ("GGGGEEEE") as pydicom's ``Dataset.get`` gives
        it, so code written for that keeps its answers: None when absent, "" when empty,
        the one value, or several written as pydicom writes a MultiValue."""
        element = self.json.get(key)
        if element is None:
            return None
        values = element.get("Value")
        if not values:
            return ""
        if len(values) == 1:
            return values[0]
        return "[" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values) + "]"


def header_of(path: Path) -> Header:
    """The header of the Part 10 file at ``path``: :func:`fast_header`, or pydicom's path.

    Raises :class:`~micropacs.errors.NotDicom` exactly when
    :func:`~micropacs.dicom.part10.read_header` does, with its message.
    """
    header = fast_header(path)
    if header is not None:
        return header
    ds = read_header(path)
    return Header(to_json(ds), str(ds.file_meta.TransferSyntaxUID))


def fast_header(path: Path) -> Header | None:
    """The header of the Part 10 file at ``path`` in one pass, or None to use pydicom's path.

    Gives ``to_json(read_header(path))`` when it gives anything, and never
    passes a file that :func:`~micropacs.dicom.part10.check_complete` finds
    truncated.
    """
    if not _default_config():
        return None
    try:
        with path.open("rb") as fp:
            return _Reader(fp).header()
    except (_Fallback, OSError, RecursionError):
        return None  # RecursionError: sequences nested deeper than Python's stack


def _default_config() -> bool:
    """Whether pydicom converts values the way this module reproduces."""
    return not (
        config.datetime_conversion
        or config.use_DS_numpy
        or config.use_IS_numpy
        or config.use_DS_decimal
        or config.use_none_as_empty_text_VR_value
        or config.settings.reading_validation_mode == config.RAISE
    )


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@lru_cache(maxsize=1024)
def _private_dictionary_vr(tag: int, creator: str) -> str:
    try:
        return str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"


def _codec(raw: bytes) -> str:
    """The Python codec of values without escape sequences, for a Specific Character Set."""
    terms = raw.decode(_DEFAULT_CODEC).rstrip(" \x00").split("\\")
    first = terms[0] if len(terms) == 1 or terms[0] else "ISO_IR 6"
    codec = python_encoding.get(first)
    if codec is None:
        raise _Fallback  # pydicom corrects or replaces it, with a warning
    return codec


def _decode(raw: bytes, codec: str) -> str:
    if _ESC in raw:
        raise _Fallback  # ISO 2022 code extensions (PS3.5 6.1.2.5)
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise _Fallback from None  # pydicom decodes with replacement characters


def _strings(vr: str, values: list[str]) -> DicomJson:
    if len(values) == 1 and not values[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _person_names(raw: bytes, codec: str) -> DicomJson:
    """PN (PS3.5 6.2.1) as PS3.18 F.2.2 objects, as pydicom's PersonName gives them."""
    names = _decode(raw.rstrip(b"\x00 "), codec).split("\\")
    out: list[dict[str, str]] = []
    for name in names:
        groups = name.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            # pydicom: an empty single name is no value; an empty one among several fails
            return {"vr": "PN"}
        value = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            value["Ideographic"] = groups[1]
        if len(groups) > 2:
            value["Phonetic"] = groups[2]
        out.append(value)
    return {"vr": "PN", "Value": out}


def _decimals(raw: bytes) -> DicomJson:
    items = raw.decode(_DEFAULT_CODEC).strip().rstrip(" \x00").split("\\")
    values: list[float] = []
    for item in items:
        text = item.strip(" ")
        if not text:
            return {"vr": "DS"}  # pydicom: no value, or a conversion that fails
        if _DS.fullmatch(text) is None:
            raise _Fallback
        values.append(float(text))
    return {"vr": "DS", "Value": values}


def _integers(raw: bytes) -> DicomJson:
    items = raw.decode(_DEFAULT_CODEC).rstrip(" \x00").split("\\")
    values: list[int] = []
    for item in items:
        if not item.strip():
            return {"vr": "IS"}  # pydicom: no value, or a conversion that fails
        text = item.strip(" ")
        if _IS.fullmatch(text) is None:
            raise _Fallback
        values.append(int(text))
    return {"vr": "IS", "Value": values}


def _numbers(raw: bytes, fmt: str, size: int) -> list[float]:
    if len(raw) % size:
        raise _Fallback  # pydicom retries other VRs
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


def _value(tag: int, vr: str, raw: bytes, codec: str) -> DicomJson:
    """One element's DICOM JSON (PS3.18 F.2.2), as pydicom's ``to_json_dict`` gives it."""
    if not raw:
        return {"vr": vr}
    if vr in _SPLIT_STRINGS:
        text = raw.decode(_DEFAULT_CODEC)
        return _strings(vr, text.rstrip(" \x00").split("\\"))
    if vr in _SPLIT_TEXT:
        return _strings(vr, [v.rstrip("\x00 ") for v in _decode(raw, codec).split("\\")])
    if vr in _NUMBERS:
        fmt, size = _NUMBERS[vr]
        values = _numbers(raw, fmt, size)
        if tag in _LUT_DESCRIPTOR_TAGS and len(values) > 1 and values[0] < 0:
            values[0] += 65536  # pydicom's fix of the first LUT Descriptor value
        return {"vr": vr, "Value": values}
    if vr == "PN":
        return _person_names(raw, codec)
    if vr == "DS":
        return _decimals(raw)
    if vr == "IS":
        return _integers(raw)
    if vr in _BINARY:
        return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
    if vr in _SINGLE_TEXT:
        return _strings(vr, [_decode(raw, codec).rstrip("\x00 ")])
    if vr == "AE":
        return _strings(vr, [v.strip() for v in raw.decode(_DEFAULT_CODEC).split("\\")])
    if vr == "UR":
        return _strings(vr, [raw.decode(_DEFAULT_CODEC).rstrip()])
    if vr == "AT":
        if len(raw) % 4:
            raise _Fallback
        pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
        tags = [f"{pairs[i] << 16 | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]
        return {"vr": vr, "Value": tags}
    raise _Fallback


def _is_bulk(tag: int, vr: str, length: int) -> bool:
    """Left out of the JSON, as :func:`~micropacs.dicom.json_model.to_json` leaves it out."""
    if tag in BULK_TAGS or ((tag >> 16) & 0xFF01 == 0x6000 and tag & 0xFFFF == 0x3000):
        return True
    return vr in _BINARY and (length == _UNDEFINED or length > BULK_THRESHOLD)


class _Dataset:
    """What converting one dataset's elements needs of the elements before them."""

    __slots__ = (
        "codec",
        "creators",
        "has_pixel_data",
        "items",
        "out",
        "pending",
        "pixel_rep",
        "used",
    )

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.out: DicomJson = {}
        self.creators: dict[int, str | None] = {}
        self.pending: list[tuple[str, bytes]] = []
        self.pixel_rep: object = _ABSENT
        self.has_pixel_data = False
        self.items: list[tuple[_Dataset, bool]] = []
        """The items of its sequences, and whether their sequence has a defined length
        (only those inherit the Pixel Representation, when pydicom converts it)."""
        self.used = False
        """Whether an element before the Specific Character Set needed the codec."""

    def private_vr(self, tag: int) -> str:
        """pydicom's VR of a private element it has no VR for (PS3.5 7.8.1)."""
        element = tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            return "LO"
        if not element & 0xFF00:
            return "UN"
        creator_tag = (tag & 0xFFFF0000) | (element >> 8)
        if creator_tag not in self.creators:
            return "UN"
        creator = self.creators[creator_tag]
        if creator is None:
            raise _Fallback
        return _private_dictionary_vr(tag, creator)

    def resolve(self, inherited: object = _ABSENT) -> DicomJson:
        """Fill in the 'US or SS' elements of this dataset and its items as pydicom
        resolves them after an implicit VR read: by the dataset's Pixel Representation,
        else the one items of a defined-length sequence inherit, else US unless Pixel
        Data is present (PS3.5 Annex A.1 leaves the VR to the dictionary)."""
        own = self.pixel_rep
        if self.pending:
            if own is not _ABSENT and own is not None:
                rep = own
            elif inherited is not _ABSENT:
                rep = inherited
            elif own is _ABSENT:
                if self.has_pixel_data:
                    raise _Fallback  # pydicom fails to resolve it
                rep = 0
            else:
                rep = 1
            vr, fmt = ("US", "H") if rep == 0 else ("SS", "h")
            for key, raw in self.pending:
                self.out[key] = {"vr": vr, "Value": _numbers(raw, fmt, 2)} if raw else {"vr": vr}
        chain = own if own is not _ABSENT and own is not None else inherited
        for item, defined in self.items:
            item.resolve(chain if defined else _ABSENT)
        return self.out


class _Reader:
    """One pass over a Part 10 file through a window of its bytes."""

    __slots__ = ("base", "data", "fp", "size")

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.data = fp.read(_CHUNK)
        self.base = 0
        fp.seek(0, 2)
        self.size = fp.tell()

    def window(self, pos: int, n: int) -> tuple[bytes, int]:
        """The buffer holding the ``n`` bytes at ``pos`` (within the file) and their offset."""
        offset = pos - self.base
        if offset < 0 or offset + n > len(self.data):
            self.fp.seek(pos)
            self.data = self.fp.read(max(n, _CHUNK))
            self.base, offset = pos, 0
            if len(self.data) < n:
                raise _Fallback  # the file changed while read
        return self.data, offset

    def read(self, pos: int, n: int) -> bytes:
        buf, offset = self.window(pos, n)
        return buf[offset : offset + n]

    def header(self) -> Header:
        if self.size < 132 or self.read(128, 4) != b"DICM":
            raise _Fallback
        pos, syntax = self.file_meta(132)
        uid = UID(syntax)
        if not uid.is_transfer_syntax or not uid.is_little_endian or uid.is_deflated:
            raise _Fallback
        ds = _Dataset(_DEFAULT_CODEC)
        if self.dataset(ds, pos, None, self.size, implicit=uid == _IMPLICIT_LE, top=True) == 0:
            raise _Fallback  # no elements: read_header says why
        return Header(ds.resolve(), syntax)

    def file_meta(self, pos: int) -> tuple[int, str]:
        """Skip the File Meta group (PS3.10 7.1); the dataset's start and Transfer Syntax UID."""
        syntax: str | None = None
        while True:
            if pos + 8 > self.size:
                raise _Fallback
            buf, off = self.window(pos, 8)
            group, element = struct.unpack_from("<HH", buf, off)
            if group != 0x0002:
                break
            vr = _VRS.get(buf[off + 4 : off + 6])
            if vr is None:
                raise _Fallback
            if vr in _LONG:
                if pos + 12 > self.size:
                    raise _Fallback
                buf, off = self.window(pos, 12)
                (length,) = struct.unpack_from("<L", buf, off + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", buf, off + 6)
                pos += 8
            if length == _UNDEFINED or pos + length > self.size:
                raise _Fallback
            if element == 0x0010:
                syntax = self.read(pos, length).decode(_DEFAULT_CODEC).rstrip("\x00 ")
            pos += length
        if not syntax or "\\" in syntax:
            raise _Fallback
        return pos, syntax

    def dataset(
        self, ds: _Dataset, pos: int, end: int | None, limit: int, *, implicit: bool, top: bool
    ) -> int:
        """Read elements into ``ds`` from ``pos``: to ``end`` (a defined-length item), to its
        delimiter (``end`` None, an undefined-length item), or to the end of the file
        (``top``). Returns where the item ends (the count of elements read, at the top).
        """
        last, count = -1, 0
        while True:
            if pos == end or (top and pos == self.size):
                return count if top else pos
            if pos + 8 > limit:
                raise _Fallback
            buf, off = self.window(pos, 8)
            group, element, length = struct.unpack_from("<HHL", buf, off)
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == _ITEM_END and end is None and not top:
                    return pos + 8
                raise _Fallback
            if implicit:
                if top and last < 0 and 0x40 < buf[off + 4] < 0x5B and 0x40 < buf[off + 5] < 0x5B:
                    raise _Fallback  # pydicom would take the dataset for explicit VR
                vr: str | None = None
                start = pos + 8
            else:
                vr = _VRS.get(buf[off + 4 : off + 6])
                if vr is None:
                    raise _Fallback  # pydicom would switch to implicit VR
                if vr in _LONG:
                    if pos + 12 > limit:
                        raise _Fallback
                    buf, off = self.window(pos, 12)
                    (length,) = struct.unpack_from("<L", buf, off + 8)
                    start = pos + 12
                else:
                    length >>= 16
                    start = pos + 8
            if tag <= last or (top and group == 0x0000):
                raise _Fallback  # out of order or repeated; pydicom reads a command set apart
            last = tag
            if top and tag in _STOP:
                self.rest(pos, implicit=implicit)
                return count
            count += 1
            if tag == _PIXEL_DATA:
                ds.has_pixel_data = True
            key = f"{tag:08X}"
            dropped = group in (0x0000, 0x0002) or element == 0
            if length == _UNDEFINED:
                if vr is None:  # pydicom: the dictionary's VR, else a sequence if an item follows
                    known = _dictionary_vr(tag)
                    if known != "SQ" and (known is not None or not self.item_follows(start)):
                        raise _Fallback
                elif vr != "SQ":
                    raise _Fallback
                items, pos = self.sequence(ds, start, None, limit, implicit=implicit, tag=tag)
                if not (dropped or _is_bulk(tag, "SQ", length)):
                    ds.out[key] = {"vr": "SQ", "Value": items}
                continue
            pos = start + length
            if pos > limit:
                raise _Fallback
            if dropped or _is_bulk(tag, vr or _dictionary_vr(tag) or "UN", length):
                if group & 1 and 0x0010 <= element <= 0x00FF:
                    raise _Fallback  # a private creator pydicom would still look at
                continue
            if vr is None:
                vr = _dictionary_vr(tag) or (ds.private_vr(tag) if group & 1 else "UN")
            elif vr == "UN":
                if group & 1:
                    replaced = ds.private_vr(tag)
                else:
                    replaced = (_dictionary_vr(tag) or "UN") if length < 0xFFFF else "UN"
                if replaced == "SQ":
                    raise _Fallback  # pydicom parses its implicit VR items as explicit
                vr = replaced  # pydicom converts the value with the known VR
            if vr == "SQ":
                items, _ = self.sequence(ds, start, pos, pos, implicit=implicit, tag=tag)
                ds.out[key] = {"vr": "SQ", "Value": items}
                continue
            if tag == _CHARSET:
                if ds.used:
                    raise _Fallback
                ds.codec = _codec(self.read(start, length)) if length else _DEFAULT_CODEC
            elif vr in _CHARSET_VRS and tag < _CHARSET:
                ds.used = True
            raw = self.read(start, length) if length else b""
            if " or " in vr:
                if vr != "US or SS" or tag not in _AMBIGUOUS_US_SS_TAGS or len(raw) % 2:
                    raise _Fallback
                ds.out[key] = {}
                ds.pending.append((key, raw))
                continue
            value = _value(tag, vr, raw, ds.codec)
            ds.out[key] = value
            if group & 1 and 0x0010 <= element <= 0x00FF:
                texts = value.get("Value", [""])
                ds.creators[tag] = texts[0] if vr == "LO" and len(texts) == 1 else None
            elif tag == _PIXEL_REPRESENTATION:
                texts = value.get("Value")
                if texts is not None and (len(texts) != 1 or not isinstance(texts[0], int)):
                    raise _Fallback
                ds.pixel_rep = None if texts is None else texts[0]

    def item_follows(self, pos: int) -> bool:
        """Whether an Item tag starts at ``pos`` (pydicom's test for an unknown undefined-length
        element being a sequence)."""
        return pos + 4 <= self.size and self.read(pos, 4) == b"\xfe\xff\x00\xe0"

    def sequence(
        self, parent: _Dataset, pos: int, end: int | None, limit: int, *, implicit: bool, tag: int
    ) -> tuple[list[DicomJson], int]:
        """The items of a sequence (PS3.5 7.5) from ``pos``: to ``end``, or to its delimiter."""
        if tag < _CHARSET:
            parent.used = True
        items: list[DicomJson] = []
        while pos != end:
            if pos + 8 > limit:
                raise _Fallback
            buf, off = self.window(pos, 8)
            group, element, length = struct.unpack_from("<HHL", buf, off)
            item_tag = group << 16 | element
            pos += 8
            if item_tag == _SEQUENCE_END and end is None:
                return items, pos
            if item_tag != _ITEM:
                raise _Fallback
            ds = _Dataset(parent.codec)
            if length == _UNDEFINED:
                pos = self.dataset(ds, pos, None, limit, implicit=implicit, top=False)
            else:
                item_end = pos + length
                if item_end > limit:
                    raise _Fallback
                pos = self.dataset(ds, pos, item_end, item_end, implicit=implicit, top=False)
            items.append(ds.out)
            parent.items.append((ds, end is not None))
        return items, pos

    def rest(self, pos: int, *, implicit: bool) -> None:
        """Walk the elements pydicom stops before (Pixel Data and after) for completeness."""
        while pos != self.size:
            if pos + 8 > self.size:
                raise _Fallback
            buf, off = self.window(pos, 8)
            group, element, length = struct.unpack_from("<HHL", buf, off)
            tag = group << 16 | element
            vr = None
            pos += 8
            if group == 0xFFFE:
                raise _Fallback
            if not implicit:
                vr = _VRS.get(buf[off + 4 : off + 6])
                if vr is None:
                    raise _Fallback
                if vr in _LONG:
                    if pos + 4 > self.size:
                        raise _Fallback
                    (length,) = struct.unpack("<L", self.read(pos, 4))
                    pos += 4
                else:
                    length >>= 16
            if length != _UNDEFINED:
                pos += length
                if pos > self.size:
                    raise _Fallback
            elif tag == _PIXEL_DATA or vr in ("OB", "OW", "UN"):
                pos = self.fragments(pos)
            else:
                raise _Fallback

    def fragments(self, pos: int) -> int:
        """Skip encapsulated fragments (PS3.5 A.4) up to their delimiter; where they end."""
        while True:
            if pos + 8 > self.size:
                raise _Fallback
            buf, off = self.window(pos, 8)
            tag, length = struct.unpack_from("<LL", buf, off)
            pos += 8
            if tag == 0xE0DDFFFE:
                return pos
            if tag != 0xE000FFFE or length == _UNDEFINED or pos + length > self.size:
                raise _Fallback
            pos += length
