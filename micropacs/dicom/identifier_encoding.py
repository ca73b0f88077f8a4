"""Encoding a query response straight from DICOM JSON to dataset bytes (PS3.5 7).

A C-FIND SCP answers each match with an identifier the catalog already holds
as DICOM JSON (PS3.18 F.2). Building a pydicom Dataset of it and encoding
that costs far more than the bytes need: :func:`encode_identifier` writes the
data elements directly, in the Little Endian transfer syntaxes (PS3.5 A.1,
A.2, A.5), with the same bytes pydicom would write for the Dataset that
:func:`~micropacs.dicom.json_model.from_json` builds:

- elements in ascending tag order (PS3.5 7.1), group lengths left out (7.2);
  explicit VR with a 4-byte length for the VRs of PS3.5 Table 7.1-1, each
  value padded to even length, UI with NUL and the rest with a space (6.2);
- SQ with defined-length elements and items (7.5);
- AE, AS, CS, DA, DT, TM, UI, UR in the default repertoire; SH, LO, ST, LT,
  UC, UT and PN in the response's Specific Character Set (PS3.5 6.1), each PN
  value its three component groups joined by ``=`` (6.2.1);
- IS and DS written as pydicom writes them, the binary numbers and AT in
  little endian; a Type 2 key without a value zero-length.

It returns None for what it does not cover, and the caller encodes with
pydicom: Big Endian, the character sets with code extensions (ISO 2022) or
pydicom's own encoders (ISO_IR 13), a value the character set cannot hold,
binary VRs, and the odd shapes (null values, a backslash inside a UI or PN
value, a Specific Character Set inside an item).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.valuerep import DS, IS

from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.tags import SPECIFIC_CHARACTER_SET

CODECS: Final = {
    term: python_encoding[term]
    for term in (
        "ISO_IR 6",
        "ISO_IR 100",
        "ISO_IR 101",
        "ISO_IR 109",
        "ISO_IR 110",
        "ISO_IR 126",
        "ISO_IR 127",
        "ISO_IR 138",
        "ISO_IR 144",
        "ISO_IR 148",
        "ISO_IR 166",
        "ISO_IR 192",
        "GB18030",
    )
}
"""Specific Character Sets (PS3.3 C.12.1.1.2) without code extensions whose Python codec
is stateless, so a multi-valued or PN value encodes as its joined text does."""
DEFAULT_CODEC: Final = python_encoding[""]
"""The default repertoire (PS3.5 6.1.2.1), as pydicom encodes it: ISO 8859-1."""

LONG_LENGTH_VRS: Final = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)
"""VRs with a reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1)."""

_ITEM: Final = struct.pack("<HH", 0xFFFE, 0xE000)
_UL: Final = struct.Struct("<L")
_US: Final = struct.Struct("<H")
_AT: Final = struct.Struct("<HH")
_LUT_DESCRIPTORS: Final = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})


class _Unsupported(Exception):
    """The fast path does not cover this value: encode with pydicom."""


def _single(values: Sequence[Any]) -> str:
    text = values[0] if len(values) == 1 else "\\".join(values)
    if not isinstance(text, str):
        raise _Unsupported
    return text


def _default(values: Sequence[Any], codec: str) -> bytes:
    text = _single(values)
    if len(text) % 2:
        text += " "
    return text.encode(DEFAULT_CODEC)


def _ui(values: Sequence[Any], codec: str) -> bytes:
    text = _single(values)
    if "\\" in text and len(values) == 1:
        raise _Unsupported  # pydicom splits it into values, each stripped
    text = text.strip() if len(values) == 1 else "\\".join(v.strip() for v in values)
    if len(text) % 2:
        text += "\0"
    return text.encode(DEFAULT_CODEC)


def _text(values: Sequence[Any], codec: str) -> bytes:
    encoded = _single(values).encode(codec)
    return encoded + b" " if len(encoded) % 2 else encoded


def _person_name(value: Any) -> str:
    if isinstance(value, dict):
        groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        if not all(isinstance(group, str) for group in groups):
            raise _Unsupported
        text = "=".join(groups)
    elif isinstance(value, str):
        text = value
    else:
        raise _Unsupported
    if "\\" in text:
        raise _Unsupported  # pydicom splits it into values
    return text.rstrip("=")


def _pn(values: Sequence[Any], codec: str) -> bytes:
    encoded = "\\".join([_person_name(value) for value in values]).encode(codec)
    return encoded + b" " if len(encoded) % 2 else encoded


def _number_string(kind: Callable[..., Any]) -> Callable[[Sequence[Any], str], bytes]:
    def encode(values: Sequence[Any], codec: str) -> bytes:
        texts = []
        for value in values:
            if type(value) is int and kind is IS:
                texts.append(str(value))
            elif value is None:
                raise _Unsupported
            else:
                texts.append(str(kind(value, validation_mode=config.IGNORE)))
        text = "\\".join(texts)
        if len(text) % 2:
            text += " "
        return text.encode(DEFAULT_CODEC)

    return encode


def _numbers(code: str) -> Callable[[Sequence[Any], str], bytes]:
    single = struct.Struct("<" + code)

    def encode(values: Sequence[Any], codec: str) -> bytes:
        if len(values) == 1:
            return single.pack(values[0])
        return struct.pack(f"<{len(values)}{code}", *values)

    return encode


def _at(values: Sequence[Any], codec: str) -> bytes:
    out = bytearray()
    for value in values:
        tag = int(value, 16) if isinstance(value, str) else value
        if type(tag) is not int or not 0 <= tag <= 0xFFFFFFFF:
            raise _Unsupported
        out += _AT.pack(tag >> 16, tag & 0xFFFF)
    return bytes(out)


_Writer = Callable[[Sequence[Any], str], bytes]
_WRITERS: Final[dict[str, _Writer]] = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "TM", "UR"), _default),
    "UI": _ui,
    **dict.fromkeys(("SH", "LO", "ST", "LT", "UC", "UT"), _text),
    "PN": _pn,
    "IS": _number_string(IS),
    "DS": _number_string(DS),
    "US": _numbers("H"),
    "SS": _numbers("h"),
    "UL": _numbers("L"),
    "SL": _numbers("l"),
    "UV": _numbers("Q"),
    "SV": _numbers("q"),
    "FL": _numbers("f"),
    "FD": _numbers("d"),
    "AT": _at,
}

_headers: dict[tuple[str, str, bool], tuple[int, bytes]] = {}


def _header(key: str, vr: str, implicit: bool) -> tuple[int, bytes]:
    """The tag and the bytes before an element's length; cached, as the keys repeat."""
    found = _headers.get((key, vr, implicit))
    if found is None:
        try:
            tag = int(key, 16)
        except ValueError:
            raise _Unsupported from None
        if not 0x00080000 <= tag <= 0xFFFFFFFF or len(key) != 8:
            raise _Unsupported  # command and file meta groups do not belong here
        head = _AT.pack(tag >> 16, tag & 0xFFFF)
        if not implicit:
            head += vr.encode("ascii") + (b"\0\0" if vr in LONG_LENGTH_VRS else b"")
        found = (tag, head)
        if len(_headers) < 4096:
            _headers[(key, vr, implicit)] = found
    return found


def _element(key: str, element: Any, codec: str, implicit: bool) -> tuple[int, bytes]:
    if not isinstance(element, dict) or "InlineBinary" in element or "BulkDataURI" in element:
        raise _Unsupported
    vr = element.get("vr")
    if not isinstance(vr, str):
        raise _Unsupported
    tag, head = _header(key, vr, implicit)
    values = element.get("Value") or []
    if not isinstance(values, list):
        raise _Unsupported
    if vr == "SQ":
        value = b"".join([_item(item, codec, implicit) for item in values])
    elif not values or (len(values) == 1 and values[0] is None):
        value = b""
    elif None in values:
        raise _Unsupported  # pydicom cannot write a null inside a multi-valued element
    else:
        writer = _WRITERS.get(vr)
        if writer is None or (vr == "SS" and tag in _LUT_DESCRIPTORS):
            raise _Unsupported
        value = writer(values, codec)
    if implicit or vr in LONG_LENGTH_VRS:
        return tag, head + _UL.pack(len(value)) + value
    if len(value) > 0xFFFF:
        raise _Unsupported  # pydicom writes such a value as UN, with a warning
    return tag, head + _US.pack(len(value)) + value


def _elements(data: DicomJson, codec: str, implicit: bool) -> bytes:
    encoded = []
    for key, element in data.items():
        tag, data_element = _element(key, element, codec, implicit)
        if tag & 0xFFFF:  # group lengths are not written (PS3.5 7.2)
            encoded.append((tag, data_element))
    encoded.sort()
    return b"".join([data_element for _, data_element in encoded])


def _item(item: Any, codec: str, implicit: bool) -> bytes:
    if not isinstance(item, dict) or SPECIFIC_CHARACTER_SET in item:
        raise _Unsupported
    body = _elements(item, codec, implicit)
    return _ITEM + _UL.pack(len(body)) + body


def encode_identifier(
    data: DicomJson,
    charset: str | None,
    *,
    implicit_vr: bool,
    little_endian: bool = True,
    deflated: bool = False,
) -> bytes | None:
    """``data`` with Specific Character Set ``charset`` (none: the default repertoire)
    as the dataset bytes of a transfer syntax (PS3.5 7, A.1, A.2, A.5), or None
    when pydicom must encode it (see the module's docstring)."""
    if not little_endian or config.datetime_conversion:
        return None
    if charset is None:
        if SPECIFIC_CHARACTER_SET in data:
            return None
        codec = DEFAULT_CODEC
    else:
        found = CODECS.get(charset)
        if found is None:
            return None
        codec = found
        data = {**data, SPECIFIC_CHARACTER_SET: {"vr": "CS", "Value": [charset]}}
    try:
        encoded = _elements(data, codec, implicit_vr)
    except (_Unsupported, UnicodeError, struct.error, TypeError, ValueError, OverflowError):
        return None
    if deflated:
        # As pynetdicom deflates an encoded dataset (PS3.5 A.5), so the bytes are the same.
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = compressor.compress(encoded) + compressor.flush()
        if len(encoded) % 2:
            encoded += b"\x00"
    return encoded
