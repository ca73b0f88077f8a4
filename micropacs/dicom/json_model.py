"""The DICOM JSON model (PS3.18 F.2) without bulk data.

The catalog keeps every instance's header in this form, so any attribute can
be matched or returned. Bulk data (pixel data, waveforms, large binary
values) is left out entirely: it stays in the stored object.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

log = logging.getLogger(__name__)

DicomJson = dict[str, Any]
"""A dataset in the DICOM JSON model (PS3.18 F.2): tag "GGGGEEEE" -> {vr, Value}."""

BULK_THRESHOLD = 1024
"""Binary values longer than this many bytes are bulk data (PS3.18 F.2.7 leaves it to us)."""

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_TAGS = {
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
    0x54001010,  # Waveform Data
    0x00420011,  # Encapsulated Document
    0x56000020,  # Spectroscopy Data
}
UNDEFINED_LENGTH = 0xFFFFFFFF


def _vr_of(raw: Any) -> str:
    if raw.VR:
        return str(raw.VR)
    try:
        return str(dictionary_VR(raw.tag))
    except KeyError:
        return "UN"


def _is_bulk(tag: BaseTag, vr: str, length: int | None) -> bool:
    if int(tag) in BULK_TAGS or ((tag.group & 0xFF01) == 0x6000 and tag.element == 0x3000):
        return True  # pixel, waveform, document data and Overlay Data (60xx,3000)
    return vr in BINARY_VRS and (length is None or length > BULK_THRESHOLD)


def to_json(ds: Dataset) -> DicomJson:
    """``ds`` as DICOM JSON (PS3.18 F.2), leaving out file meta, group lengths and bulk data.

    Never raises on an odd value: an element pydicom cannot convert is kept
    with its VR and no Value.
    """
    out: DicomJson = {}
    for at in sorted(ds.keys()):
        # Not ds.elements(): it reads and converts deferred values, which may fail (an
        # unknown VR) or read bulk data from the file only to leave it out.
        raw = ds.get_item(at, keep_deferred=True)
        tag = BaseTag(raw.tag)
        if tag.group in (0x0000, 0x0002) or tag.element == 0:
            continue
        vr = _vr_of(raw)
        if isinstance(raw, RawDataElement):
            length: int | None = None if raw.length == UNDEFINED_LENGTH else raw.length
        else:
            value = raw.value
            length = len(value) if isinstance(value, bytes | bytearray) else 0
        if _is_bulk(tag, vr, length):
            continue
        key = f"{int(tag):08X}"
        try:
            element = ds[tag]
            if element.VR == "SQ":
                out[key] = {"vr": "SQ", "Value": [to_json(item) for item in element.value or []]}
            elif element.VR in BINARY_VRS and len(element.value or b"") > BULK_THRESHOLD:
                continue
            else:
                out[key] = element.to_json_dict(None, BULK_THRESHOLD)
        except Exception:  # noqa: BLE001 - odd values must not stop a store
            log.debug("attribute kept without value", extra={"tag": key})
            out[key] = {"vr": vr}
    return out


def from_json(data: DicomJson) -> Dataset:
    """A pydicom Dataset from DICOM JSON (PS3.18 F.2).

    Builds elements directly (values came from a dataset once, so they are
    not validated again), which is several times faster than pydicom's
    ``Dataset.from_json``; binary values fall back to it.
    """
    ds = Dataset()
    for key, element in data.items():
        if "InlineBinary" in element or "BulkDataURI" in element:
            ds.update(Dataset.from_json({key: element}))
            continue
        vr = str(element.get("vr", "UN"))
        values: list[Any] = element.get("Value") or []
        value: Any
        if vr == "SQ":
            value = [from_json(item) for item in values]
        elif not values:
            value = None
        else:
            if vr == "PN":
                values = [_person_name(v) for v in values]
            elif vr == "AT":
                values = [int(v, 16) if isinstance(v, str) else v for v in values]
            value = values[0] if len(values) == 1 else values
        ds.add(DataElement(int(key, 16), vr, value, validation_mode=config.IGNORE))
    return ds


def _person_name(value: Any) -> str:
    """A PN value of DICOM JSON as the '='-joined component groups of PS3.5 6.2.1."""
    if not isinstance(value, dict):
        return str(value)
    groups = [str(value.get(g, "")) for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def element(vr: str, *values: Any) -> DicomJson:
    """One DICOM JSON element (PS3.18 F.2.2): its VR and values; no ``Value`` when empty."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def text_of(element: DicomJson | None, *, skip_blank: bool = False) -> list[str]:
    """The values of one DICOM JSON element as text.

    A PN value is its Alphabetic component group (PS3.18 F.2.2), a null value
    "" (PS3.18 F.2.5), and an element that is absent, not an object or whose
    Value is not an array has no values. With ``skip_blank``, values that are
    empty or only spaces are left out, as matching (PS3.4 C.2.2.2) sees them.
    """
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list):
        return []
    texts: list[str] = []
    for value in values:
        if isinstance(value, dict):
            text = str(value.get("Alphabetic", ""))
        else:
            text = "" if value is None else str(value)
        if text.strip() or not skip_blank:
            texts.append(text)
    return texts


def first_text(data: DicomJson, tag: str) -> str:
    """The first value of ``tag`` in ``data`` as text, or "" when absent or empty."""
    texts = text_of(data.get(tag))
    return texts[0] if texts else ""
