"""Objects sent with the patient's current attributes, their stored bytes untouched.

After an update or merge from the RIS the catalog answers with the patient's
new attributes; an object retrieved afterwards must carry them too, while the
archive keeps it as received. :func:`rewrite` writes a copy whose Patient
module elements (PS3.3 C.7.1.1: groups 0010 and 0012 at the top level of the
dataset, PS3.5 7.1) are re-encoded with the new values, and every other byte
(file meta, the rest of the header, pixel data) copied as stored, in chunks:
memory does not grow with the object.

The new values are encoded in the object's Specific Character Set (PS3.5
6.1). When one cannot be, or the syntax is deflated or big endian (PS3.5
A.5, A.3), the whole dataset is decoded and written again (in UTF-8, ISO_IR
192, for the first case): slower, and bounded by the object's size.
"""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from micropacs.dicom import part10
from micropacs.dicom.json_model import DicomJson
from micropacs.errors import NotDicom

FIRST, END = 0x00100000, 0x00130000
"""The top-level tags a rewrite re-encodes: groups 0010 and 0012 (the Patient module's)."""
CHARSET = 0x00080005
CHUNK = 1 << 20


def patient_elements(patient: DicomJson) -> Dataset:
    """The patient's attributes (DICOM JSON, PS3.18 F.2) as a dataset."""
    return Dataset.from_json({tag: value for tag, value in patient.items() if _in_range(tag)})


def _in_range(tag: str) -> bool:
    try:
        return FIRST <= int(tag, 16) < END
    except ValueError:
        return False


def apply(ds: Dataset, patient: DicomJson) -> None:
    """Set the patient's attributes on a decoded dataset (the converting paths)."""
    for element in patient_elements(patient):
        ds[element.tag] = element


def rewrite(path: Path, patient: DicomJson, out: Path) -> bool:
    """Write to ``out`` the Part 10 object at ``path`` with the patient's attributes;
    False (nothing written) when it already holds them."""
    try:
        meta = read_file_meta_info(path)
        syntax = UID(str(meta.TransferSyntaxUID))
    except Exception as exc:
        raise NotDicom(f"stored object is not readable DICOM: {exc}") from exc
    wanted = patient_elements(patient)
    if syntax.is_deflated or not syntax.is_little_endian:
        return _decoded(path, wanted, out)
    implicit = syntax.is_implicit_VR
    with path.open("rb") as fp:
        charset, start, end = _regions(fp, implicit)
        region = _read(fp, start, end)
    held = read_dataset(BytesIO(region), implicit, True) if region else Dataset()
    encodings = convert_encodings(charset or None)
    if all(_same(held.get(e.tag), e) for e in wanted):
        return False
    if not all(_encodable(e, encodings, default=not charset) for e in wanted):
        return _decoded(path, wanted, out, utf8=True)
    for element in wanted:
        held[element.tag] = element
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, implicit
    for element in held:  # a Dataset iterates in tag order
        write_data_element(encoded, element, encodings)
    with path.open("rb") as source, out.open("wb") as target:
        _copy(source, target, start)
        target.write(encoded.getvalue())
        source.seek(end)
        shutil.copyfileobj(source, target, CHUNK)
    return True


def _regions(fp: BinaryIO, implicit: bool) -> tuple[list[str], int, int]:
    """The Specific Character Set and where the patient groups start and end."""
    fp.seek(128 + 4)
    part10._skip_meta(fp)
    charset: list[str] = []
    while True:
        at = fp.tell()
        header = part10._element_header(fp, implicit)
        if header is None:
            return charset, at, at
        _skip(fp, header, implicit)
        if header[0] >= FIRST:
            break
        if header[0] == CHARSET:
            charset = _charset(_read(fp, at, fp.tell()), implicit)
    start = at
    while header is not None and header[0] < END:
        at = fp.tell()
        header = part10._element_header(fp, implicit)
        if header is not None:
            _skip(fp, header, implicit)
    return charset, start, at


def _skip(fp: BinaryIO, header: tuple[int, bytes, int], implicit: bool) -> None:
    """Move past the value of the element whose header was just read."""
    tag, vr, length = header
    if length != part10.UNDEFINED:
        fp.seek(length, 1)
    elif tag == part10.PIXEL_DATA or vr in (b"OB", b"OW", b"UN"):
        part10._walk_fragments(fp, _UNBOUNDED)
    else:
        part10._walk_items(fp, _UNBOUNDED, implicit)


_UNBOUNDED = 1 << 62
"""No size check while walking: a stored object was checked whole when it was received."""


def _charset(raw: bytes, implicit: bool) -> list[str]:
    value = read_dataset(BytesIO(raw), implicit, True).get("SpecificCharacterSet")
    values = list(value) if isinstance(value, MultiValue) else [value]
    return [str(v).strip() for v in values if v and str(v).strip()]


def _read(fp: BinaryIO, start: int, end: int) -> bytes:
    here = fp.tell()
    fp.seek(start)
    raw = fp.read(end - start)
    fp.seek(here)
    return raw


def _copy(source: BinaryIO, target: BinaryIO, length: int) -> None:
    source.seek(0)
    while length > 0:
        chunk = source.read(min(CHUNK, length))
        if not chunk:
            raise NotDicom("stored object ended early")
        target.write(chunk)
        length -= len(chunk)


def _texts(element: DataElement) -> list[str]:
    values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
    found: list[str] = []
    for value in values:
        if isinstance(value, PersonName):
            found.extend(str(g) for g in value.components)
        elif isinstance(value, str):
            found.append(value)
    return found


def _encodable(element: DataElement, encodings: list[str], *, default: bool) -> bool:
    """Whether the element's text can be written in the object's character set (the
    default repertoire, ASCII, when it names none: PS3.5 6.1.2.1)."""
    for text in _texts(element):
        if default:
            if not text.isascii():
                return False
            continue
        if not any(_encodes(text, encoding) for encoding in encodings):
            return False
    return True


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _same(held: DataElement | None, wanted: DataElement) -> bool:
    if held is None:
        return wanted.VM == 0
    if held.VR == "SQ" or wanted.VR == "SQ":
        return held.to_json_dict(None, _UNBOUNDED) == wanted.to_json_dict(None, _UNBOUNDED)
    return bool(_normal(held.value) == _normal(wanted.value))


def _normal(value: object) -> object:
    if isinstance(value, MultiValue | list):
        return [_normal(v) for v in value]
    if isinstance(value, PersonName):
        return str(value).strip()
    if isinstance(value, str):
        return value.strip()
    return "" if value is None else value


def _decoded(path: Path, wanted: Dataset, out: Path, *, utf8: bool = False) -> bool:
    """The whole dataset decoded, the attributes set, and written again."""
    try:
        ds = dcmread(path)
    except Exception as exc:
        raise NotDicom(f"stored object is not readable DICOM: {exc}") from exc
    if all(_same(ds.get(e.tag), e) for e in wanted):
        return False
    if utf8:
        ds.decode()  # every text value to str, so that it is written in the new set
        ds.SpecificCharacterSet = "ISO_IR 192"
    for element in wanted:
        ds[element.tag] = element
    ds.save_as(out, enforce_file_format=True)
    return True
