"""QIDO-RS query parameters as a C-FIND identifier (PS3.18 8.3.4, 10.6).

``{attributeID}={value}`` becomes a matching key with the same semantics as
C-FIND (PS3.4 C.2.2.2), ``includefield`` adds return keys (``all`` asks for
every attribute the archive holds), ``limit`` and ``offset`` page the
answer, and ``fuzzymatching=true`` is accepted and ignored with the warning
PS3.18 8.3.4.1 prescribes (matching stays literal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword

from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.levels import Level
from micropacs.dicom.tags import QUERY_RETRIEVE_LEVEL
from micropacs.errors import InvalidInput

FUZZY_IGNORED = "299 micropacs: fuzzymatching is not supported; only literal matching was done"

# Returned whether asked or not (PS3.18 Table 10.6.3-3, -4, -5).
DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "SpecificCharacterSet",
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
    ),
    Level.IMAGE: (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}
_CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}


@dataclass
class QidoQuery:
    """A QIDO-RS request as the QueryService takes it."""

    identifier: DicomJson
    limit: int = 0
    offset: int = 0
    include_all: bool = False
    warnings: list[str] = field(default_factory=list)


def _tag(attribute: str) -> str:
    """``PatientName`` or ``00100010`` as ``00100010``; a dotted path is not supported."""
    if "." in attribute:
        raise InvalidInput(f"sequence attribute paths such as {attribute!r} are not supported")
    if len(attribute) == 8 and all(c in "0123456789abcdefABCDEF" for c in attribute):
        return attribute.upper()
    tag = tag_for_keyword(attribute)
    if tag is None:
        raise InvalidInput(f"{attribute!r} is neither a DICOM keyword nor a tag such as 00100010")
    return f"{tag:08X}"


def _vr(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16))).split(" or ")[0]
    except KeyError:
        return "UN"


def _element(tag: str, value: str | None) -> DicomJson:
    vr = _vr(tag)
    if value is None or value == "":
        return {"vr": vr}
    if vr == "SQ":
        raise InvalidInput(f"({tag[:4]},{tag[4:]}) is a sequence: match on its items' attributes")
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value}]}
    if vr == "UI":
        return {"vr": vr, "Value": [v.strip() for v in value.split(",")]}
    return {"vr": vr, "Value": [value]}


def _number(name: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {text!r}") from None
    if number < 0:
        raise InvalidInput(f"{name} cannot be negative")
    return number


def parse(
    level: Level, params: Iterable[tuple[str, str]], fixed: dict[str, str] | None = None
) -> QidoQuery:
    """The identifier, paging and warnings of a QIDO-RS request at ``level``.

    ``fixed`` holds the UIDs of the resource path (``/studies/{study}/series``).
    """
    query = QidoQuery(identifier={})
    keys = query.identifier
    for keyword in DEFAULT_KEYS.get(level, ()):  # the admin's patient level: asked keys only
        if keyword != "RetrieveURL":
            keys[_tag(keyword)] = {"vr": _vr(_tag(keyword))}
    for name, value in params:
        lowered = name.lower()
        if lowered == "includefield":
            for attribute in value.split(","):
                attribute = attribute.strip()
                if attribute.lower() == "all":
                    query.include_all = True
                elif attribute:
                    keys.setdefault(_tag(attribute), _element(_tag(attribute), None))
        elif lowered == "limit":
            query.limit = _number("limit", value)
        elif lowered == "offset":
            query.offset = _number("offset", value)
        elif lowered == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidInput("fuzzymatching must be true or false (PS3.18 8.3.4.1)")
            if value.lower() == "true":
                query.warnings.append(FUZZY_IGNORED)
        elif lowered not in _CONTROL:
            tag = _tag(name)
            keys[tag] = _element(tag, value)
    for keyword, uid in (fixed or {}).items():
        keys[_tag(keyword)] = element("UI", uid)
    keys[QUERY_RETRIEVE_LEVEL] = element("CS", level.value)
    return query
