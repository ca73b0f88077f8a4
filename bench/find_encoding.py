"""The qr service's work per C-FIND match, in process: from the catalog's DICOM JSON to bytes.

Two sets of responses shaped as the QueryService returns them: 250 matches
of an image-level query of one series (``synthetic_header`` instances, the
requested character set ISO_IR 192) and 100 of a study-level query with the
usual return keys (asked in ISO_IR 192 and again in ISO_IR 100, so that some
names stay Latin-1 and the others are answered in UTF-8). For each, the time
per match of:

- ``identifier``: the identifier's dataset bytes, the old way (``from_json``,
  the character set, pynetdicom's ``encode``) and the new one
  (:func:`~micropacs.dicom.identifier_encoding.encode_identifier`), checked
  to be the same bytes;
- ``pynetdicom_response``: what pynetdicom does next for each Pending
  response (the C-FIND-RSP primitive turned into a message, its command set
  encoded, the message split into P-DATA, the P-DATA-TF PDU encoded);
- ``qido``: a QIDO-RS answer's per-match work (RetrieveURL added, JSON).

    .venv/bin/python -m bench.find_encoding [--repeat 20] [--profile old|new]

Prints milliseconds per match (best of ``--repeat`` runs); with
``--profile`` it prints the cProfile of that way instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dicom.charset import response_charset
from micropacs.dicom.identifier_encoding import encode_identifier
from micropacs.dicom.json_model import DicomJson, element, from_json, to_json
from micropacs.dicom.levels import Level
from micropacs.dimse import find_responses
from services.qr.qido_rs import _answer
from tests import dicomdata

IMAGE_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "ContentDate",
    "PatientName",
    "ImageComments",
)
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "ReferencedStudySequence",
)
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MAX_PDU = 128 * 1024


def _key(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"{tag:08X}", dictionary_VR(tag)


def response(header: DicomJson, keywords: tuple[str, ...], level: str) -> DicomJson:
    """A match as QueryService.find returns it: the requested keys, empty when not held."""
    out: DicomJson = {}
    for keyword in keywords:
        key, vr = _key(keyword)
        out[key] = header.get(key) or element(vr)
    out[_key("QueryRetrieveLevel")[0]] = element("CS", level)
    out[_key("RetrieveAETitle")[0]] = element("AE", "MICROPACS")
    out[_key("InstanceAvailability")[0]] = element("CS", "ONLINE")
    return dict(sorted(out.items()))


def image_matches() -> list[DicomJson]:
    return [
        response(to_json(dicomdata.synthetic_header(i)), IMAGE_KEYS, "IMAGE") for i in range(250)
    ]


def study_matches() -> list[DicomJson]:
    matches = []
    for study in range(100):
        header = to_json(dicomdata.synthetic_header(study * 250))
        header[_key("ModalitiesInStudy")[0]] = element("CS", "CT", "SR")
        header[_key("NumberOfStudyRelatedSeries")[0]] = element("IS", 1)
        header[_key("NumberOfStudyRelatedInstances")[0]] = element("IS", 250)
        matches.append(response(header, STUDY_KEYS, "STUDY"))
    return matches


def old_identifier(match: DicomJson, requested: str, implicit: bool) -> bytes:
    ds = from_json(match)
    charset = response_charset(match, requested)
    if charset:
        ds.SpecificCharacterSet = charset
    encoded = encode(ds, implicit, True, False)
    assert encoded
    return encoded


def new_identifier(match: DicomJson, requested: str, implicit: bool) -> bytes:
    encoded = encode_identifier(match, response_charset(match, requested), implicit_vr=implicit)
    assert encoded is not None
    return encoded


def old_response(identifier: bytes) -> list[bytes]:
    """pynetdicom's work for one Pending response after the identifier is encoded:
    the P-DATA-TF PDUs it sends."""
    rsp = C_FIND()
    rsp.MessageID = 7
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = STUDY_ROOT_FIND
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    message.context_id = 1
    return _pdus(message.encode_msg(1, MAX_PDU))


def new_response(identifier: bytes) -> list[bytes]:
    """The same with the command set encoded once per request, in one PDU."""
    message = find_responses.pending_message(7, STUDY_ROOT_FIND, identifier)
    return _pdus(message.encode_msg(1, MAX_PDU))


def _pdus(primitives: Iterable[P_DATA]) -> list[bytes]:
    encoded = []
    for pdata in primitives:
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        encoded.append(pdu.encode())
    return encoded


def _pdvs(pdus: list[bytes]) -> list[bytes]:
    """The PDV items of encoded P-DATA-TF PDUs (PS3.8 9.3.5): the DIMSE message."""
    items = []
    for pdu in pdus:
        offset = 6
        while offset < len(pdu):
            length = int.from_bytes(pdu[offset : offset + 4], "big")
            items.append(pdu[offset + 4 : offset + 4 + length])
            offset += 4 + length
    return items


def qido(matches: list[DicomJson]) -> int:
    return len(json.dumps([_answer(Level.IMAGE, "http://h/dicom-web", m) for m in matches]))


def per_match_ms(work: Callable[[], Any], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return round(best / count * 1000, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", choices=("old", "new"))
    args = parser.parse_args()
    cases = {
        "image_250_utf8": (image_matches(), "ISO_IR 192"),
        "study_100_utf8": (study_matches(), "ISO_IR 192"),
        "study_100_latin1": (study_matches(), "ISO_IR 100"),
    }
    for name, (matches, requested) in cases.items():
        if args.profile:
            profile = cProfile.Profile()
            way = old_way if args.profile == "old" else new_way
            profile.runcall(way, matches, requested)
            print(f"== {name} ({args.profile})")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        else:
            print(name, json.dumps(measure(matches, requested, args.repeat)), flush=True)


def old_way(matches: list[DicomJson], requested: str) -> None:
    for match in matches:
        old_response(old_identifier(match, requested, False))


def new_way(matches: list[DicomJson], requested: str) -> None:
    for match in matches:
        new_response(new_identifier(match, requested, False))


def measure(matches: list[DicomJson], requested: str, repeat: int) -> dict[str, Any]:
    """Milliseconds per match of each step, after checking both ways give the same bytes."""
    for implicit in (False, True):
        old = [old_identifier(m, requested, implicit) for m in matches]
        assert [new_identifier(m, requested, implicit) for m in matches] == old
    identifiers = [old_identifier(m, requested, False) for m in matches]
    for identifier in identifiers:
        old_pdus, new_pdus = old_response(identifier), new_response(identifier)
        assert (len(old_pdus), len(new_pdus)) == (2, 1)
        assert _pdvs(old_pdus) == _pdvs(new_pdus)
    n = len(matches)

    def ms(work: Callable[[], Any]) -> float:
        return per_match_ms(work, n, repeat)

    return {
        "matches": n,
        "identifier_ms": {
            "old": ms(lambda: [old_identifier(m, requested, False) for m in matches]),
            "new": ms(lambda: [new_identifier(m, requested, False) for m in matches]),
        },
        "pynetdicom_response_ms": {
            "old": ms(lambda: [old_response(i) for i in identifiers]),
            "new": ms(lambda: [new_response(i) for i in identifiers]),
        },
        "total_ms": {
            "old": ms(lambda: old_way(matches, requested)),
            "new": ms(lambda: new_way(matches, requested)),
        },
        "qido_ms": ms(lambda: qido(matches)),
    }


if __name__ == "__main__":
    main()
