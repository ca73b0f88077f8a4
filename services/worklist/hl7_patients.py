"""The Patient module from an HL7 PID segment, and the ADT messages that change it.

IHE RAD TF-2 4.1 (Patient Registration, ADT^A01/A04), 4.12 (Patient Update,
ADT^A08, and Patient Merge, ADT^A40) and its mapping of HL7 v2 to DICOM:
PID-3 is the Patient ID with its assigning authority as Issuer of Patient ID,
PID-5 the name, PID-7 the birth date, PID-8 the sex (PS3.3 C.7.1.1). The
value conversions (XPN and XCN to PN, TS to DA and TM, table 0001 to
Patient's Sex) are here so the order mapping uses the same ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element
from micropacs.events import PatientMerged, PatientUpdated
from services.worklist.hl7_message import (
    ErrorCode,
    Hl7Context,
    Hl7Message,
    Hl7Reject,
    Location,
    name_of,
    with_charset,
)

LO_MAX = 64
"""Long String: at most 64 characters (PS3.5 6.2)."""
SH_MAX = 16
"""Short String: at most 16 characters (PS3.5 6.2)."""

_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?")
_SEXES = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
"""HL7 table 0001 (Administrative Sex) -> Patient's Sex (PS3.3 C.7.1.1): U is unknown."""


def pn(*components: str) -> str:
    """A PN value (PS3.5 6.2.1): family^given^middle^prefix^suffix, trailing empty ones cut."""
    return "^".join(part.replace("^", " ").strip() for part in components).rstrip("^")


def person_name(msg: Hl7Message, seg: Any, field: int) -> str:
    """XPN (family&…^given^middle^suffix^prefix) as a PN value; suffix and prefix swap."""
    family, given, middle, suffix, prefix = (msg.value(seg, field, 1, c) for c in range(1, 6))
    return pn(family, given, middle, prefix, suffix)


def provider_name(msg: Hl7Message, seg: Any, field: int) -> str:
    """XCN (ID^family^given^middle^suffix^prefix) or CNN in its first component (OBR-34, NDL)."""
    if msg.value(seg, field, 1, 1, 2):  # CNN: ID&family&given&middle&suffix&prefix
        parts = [msg.value(seg, field, 1, 1, s) for s in range(2, 7)]
    else:
        parts = [msg.value(seg, field, 1, c) for c in range(2, 7)]
    family, given, middle, suffix, prefix = parts
    return pn(family, given, middle, prefix, suffix)


def name_element(name: str) -> DicomJson:
    """A PN element of DICOM JSON (PS3.18 F.2.2): the Alphabetic group; no Value when empty."""
    return element("PN", {"Alphabetic": name}) if name else element("PN")


def date_of(text: str, where: Location) -> str:
    """The DA (YYYYMMDD) of an HL7 DT/DTM/TS value; Hl7Reject 102 when it has no full date."""
    if not _DATE.fullmatch(text[:8]):
        raise Hl7Reject(ErrorCode.DATA_TYPE_ERROR, f"{where} is not a date (YYYYMMDD…)", where)
    return text[:8]


def time_of(text: str, where: Location) -> str:
    """The TM (HHMM[SS[.F]]) of an HL7 DTM/TS value after its date; "" when it has none."""
    rest = re.split(r"[+-]", text[8:], maxsplit=1)[0]
    if not rest:
        return ""
    if not _TIME.fullmatch(rest):
        raise Hl7Reject(ErrorCode.DATA_TYPE_ERROR, f"{where} has no valid time", where)
    return rest


def short_string(text: str, where: Location, limit: int = SH_MAX) -> str:
    """An identifier that must fit its VR: refused (102) rather than cut, so two never collide."""
    if len(text) > limit:
        raise Hl7Reject(
            ErrorCode.DATA_TYPE_ERROR, f"{where} is longer than {limit} characters", where
        )
    return text


def patient_identity(msg: Hl7Message, seg: Any, field: int, default_issuer: str) -> tuple[str, str]:
    """Patient ID and Issuer of Patient ID from a CX field (PID-3, MRG-1).

    The first repetition carrying an ID; the issuer is the assigning
    authority's namespace ID (CX-4.1), else its universal ID (CX-4.2), else
    ``default_issuer``.
    """
    name = name_of(seg)
    where = Location(name, field)
    for rep in range(1, max(msg.repetitions(seg, field), 1) + 1):
        patient_id = msg.value(seg, field, rep, 1)
        if patient_id.strip():
            issuer = msg.value(seg, field, rep, 4, 1) or msg.value(seg, field, rep, 4, 2)
            return (
                short_string(patient_id.strip(), where, LO_MAX),
                short_string(issuer.strip() or default_issuer, Location(name, field, 4), LO_MAX),
            )
    raise Hl7Reject(ErrorCode.REQUIRED_FIELD_MISSING, f"{where} (patient ID) is missing", where)


HL7_NULL = '""'
"""A field of two double quotes: the value is deleted (HL7 v2.5.1 2.5.3); an absent one
(empty) leaves it unchanged."""


def patient_module(
    msg: Hl7Message, pid: Any, default_issuer: str, *, changes_only: bool = False
) -> tuple[str, str, DicomJson]:
    """Patient ID, issuer and the Patient module attributes (PS3.3 C.7.1.1) of one PID.

    Name, birth date and sex sent as ``""`` (HL7 v2.5.1 2.5.3) are empty. Left
    out, they are empty too, unless ``changes_only`` (an update: HL7's "no
    change"), when they are not in the attributes at all.
    """
    patient_id, issuer = patient_identity(msg, pid, 3, default_issuer)
    attributes: DicomJson = {
        tags.PATIENT_ID: element("LO", patient_id),
        tags.ISSUER_OF_PATIENT_ID: element("LO", issuer) if issuer else element("LO"),
    }
    fields: dict[str, tuple[int, Callable[[], DicomJson], str]] = {
        tags.PATIENT_NAME: (5, lambda: name_element(person_name(msg, pid, 5)), "PN"),
        tags.PATIENT_BIRTH_DATE: (7, lambda: _birth_date(msg, pid), "DA"),
        tags.PATIENT_SEX: (8, lambda: _sex(msg, pid), "CS"),
    }
    for tag, (field_no, mapped, vr) in fields.items():
        raw = msg.raw(pid, field_no)
        if raw == HL7_NULL:
            attributes[tag] = element(vr)
        elif raw or not changes_only:
            attributes[tag] = mapped()
    return patient_id, issuer, attributes


def _birth_date(msg: Hl7Message, pid: Any) -> DicomJson:
    birth = msg.value(pid, 7)
    return element("DA", date_of(birth, Location("PID", 7))) if birth else element("DA")


def _sex(msg: Hl7Message, pid: Any) -> DicomJson:
    code = msg.value(pid, 8).upper()
    if code not in _SEXES and code:
        where = Location("PID", 8)
        raise Hl7Reject(ErrorCode.TABLE_VALUE_NOT_FOUND, f"{where} is not in table 0001", where)
    sex = _SEXES.get(code, "")
    return element("CS", sex) if sex else element("CS")


def first_pid(msg: Hl7Message) -> Any:
    """The message's PID segment; Hl7Reject 100 when it has none."""
    found = msg.first("PID")
    if found is None:
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "PID segment missing", Location("PID"))
    return found


def patient_updated(msg: Hl7Message, context: Hl7Context) -> list[PatientUpdated]:
    """ADT^A01, A04, A08: the demographics the RIS sent; a field it left out is unchanged."""
    pid = first_pid(msg)
    patient_id, issuer, attributes = patient_module(
        msg, pid, context.default_issuer, changes_only=True
    )
    return [
        PatientUpdated(
            patient_id=patient_id,
            issuer_of_patient_id=issuer,
            attributes=with_charset(attributes, msg),
        )
    ]


def patients_merged(msg: Hl7Message, context: Hl7Context) -> list[PatientMerged]:
    """ADT^A40: each PID (the surviving patient) with the MRG after it (MRG-1, the prior ID)."""
    merges: list[PatientMerged] = []
    survivor: tuple[str, str] | None = None
    for seg in msg.message:
        name = name_of(seg)
        if name == "PID":
            survivor = patient_identity(msg, seg, 3, context.default_issuer)
        elif name == "MRG":
            if survivor is None:
                raise Hl7Reject(
                    ErrorCode.SEGMENT_SEQUENCE_ERROR, "MRG before its PID", Location("MRG")
                )
            prior = patient_identity(msg, seg, 1, context.default_issuer)
            merges.append(
                PatientMerged(
                    patient_id=survivor[0],
                    issuer_of_patient_id=survivor[1],
                    prior_patient_id=prior[0],
                    prior_issuer_of_patient_id=prior[1],
                )
            )
            survivor = None
    if not merges:
        first_pid(msg)
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "MRG segment missing", Location("MRG"))
    return merges
