"""C-FIND identifiers encoded straight from DICOM JSON: the same bytes as through pydicom.

Generated matches (every VR a C-FIND identifier carries, odd and even
lengths, multi-valued strings, empty Type 2 keys, sequences, names with
Latin, Czech, Japanese and Hangul component groups) are encoded by
:func:`~micropacs.dicom.identifier_encoding.encode_identifier` and by the
pydicom path the C-FIND handler used before (``from_json``, the response's
character set, pynetdicom's ``encode``), in every transfer syntax the qr
service accepts; where the direct encoding declines (ISO 2022, Big Endian)
the seam of :mod:`micropacs.dimse.find_responses` must fall back to pydicom.
"""

from __future__ import annotations

from functools import partial
from io import BytesIO
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode as pynetdicom_encode

from micropacs.dicom.charset import response_charset
from micropacs.dicom.identifier_encoding import CODECS, encode_identifier
from micropacs.dicom.json_model import DicomJson
from micropacs.dimse.find_responses import JsonIdentifier, encode, pending_message

SYNTAXES = [(True, True, False), (False, True, False), (False, True, True), (False, False, False)]
"""(implicit VR, little endian, deflated): the identifier syntaxes of the qr service."""
PROPERTIES = settings(max_examples=400, database=None, deadline=None)

ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"))
NAMES = (
    "Dvořák Müller Ødegård Łukasiewicz Sánchez Jiří Zoë François 山田 太郎 やまだ 홍길동 O'Brien"
)
WORDS = st.text(st.sampled_from([*sorted(set(NAMES) - {" "}), "^", " ", "a", "Z"]), max_size=9)
DIGITS = st.text(st.sampled_from("0123456789"), min_size=1, max_size=12)
UID = st.lists(DIGITS, min_size=1, max_size=6).map(".".join)

STRINGS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "00080050": ("SH", WORDS),  # AccessionNumber
    "00080054": ("AE", ASCII.map(lambda s: s[:16])),  # RetrieveAETitle
    "00080061": ("CS", st.sampled_from(["CT", "MR", "SR", "", "OT "])),  # ModalitiesInStudy
    "00080020": ("DA", st.sampled_from(["20240101", "", "19991231"])),  # StudyDate
    "00080030": ("TM", st.sampled_from(["101010", "0930", "235959.123456", ""])),  # StudyTime
    "0008002A": ("DT", st.sampled_from(["20240101101010", "2024", "20240101101010.1+0100"])),
    "00081030": ("LO", WORDS),  # StudyDescription
    "00081190": ("UR", st.sampled_from(["http://h/x", "http://h/xy"])),  # RetrieveURL
    "00101010": ("AS", st.sampled_from(["045Y", "012M"])),  # PatientAge
    "00104000": ("LT", WORDS),  # PatientComments
    "00204000": ("LT", WORDS),  # ImageComments
    "0020000D": ("UI", UID),  # StudyInstanceUID
    "00081150": ("UI", UID.map(lambda u: f" {u} ")),  # ReferencedSOPClassUID, padded
    "00321060": ("LO", WORDS),  # RequestedProcedureDescription
    "00400254": ("LO", WORDS),  # PerformedProcedureStepDescription
    "00181030": ("LO", ASCII),  # ProtocolName
    "00400280": ("ST", WORDS),  # CommentsOnThePerformedProcedureStep
    "00189938": ("UC", WORDS),  # (private use of a UC tag is fine for encoding)
    "00080100": ("SH", ASCII),  # CodeValue
}
NUMBERS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "00201208": ("IS", st.integers(-(2**31), 2**31 - 1)),  # NumberOfStudyRelatedInstances
    "00200013": ("IS", st.sampled_from(["12", " 7 ", "3.0"])),  # InstanceNumber as text
    "00101030": ("DS", st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-999, 999)),
    "00280010": ("US", st.integers(0, 0xFFFF)),  # Rows
    "00189219": ("SS", st.integers(-0x8000, 0x7FFF)),
    "00280008": ("IS", st.integers(1, 5000)),  # NumberOfFrames
    "00082112": ("UL", st.integers(0, 0xFFFFFFFF)),
    "00189216": ("SL", st.integers(-(2**31), 2**31 - 1)),
    "00189327": ("FD", st.floats(allow_nan=False)),
    "00189318": ("FL", st.floats(width=32, allow_nan=False)),
    "00209165": ("AT", st.integers(0, 0xFFFFFFFF).map(lambda t: f"{t:08X}")),
}


def _element(vr: str, values: list[Any]) -> DicomJson:
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _simple(table: dict[str, tuple[str, st.SearchStrategy[Any]]]) -> st.SearchStrategy[DicomJson]:
    entries = [
        st.tuples(st.just(key), st.lists(values, max_size=3).map(partial(_element, vr)))
        for key, (vr, values) in table.items()
    ]
    return st.lists(st.one_of(entries), max_size=8).map(dict)


GROUPS = st.fixed_dictionaries(
    {}, optional={"Alphabetic": WORDS, "Ideographic": WORDS, "Phonetic": WORDS}
)
NAME = st.tuples(st.sampled_from(["00100010", "00080090"]), st.lists(GROUPS, max_size=2))
ITEM = _simple(dict(list(STRINGS.items())[:6]) | {"00081150": STRINGS["00081150"]})
SEQUENCE = st.tuples(
    st.sampled_from(["00081110", "00081115"]),  # ReferencedStudySequence, ReferencedSeriesSequence
    st.lists(ITEM, max_size=3),
)


@st.composite
def matches(draw: st.DrawFn) -> DicomJson:
    match = draw(_simple(STRINGS)) | draw(_simple(NUMBERS))
    for key, names in draw(st.lists(NAME, max_size=2)):
        match[key] = _element("PN", names)
    for key, items in draw(st.lists(SEQUENCE, max_size=2)):
        match[key] = {"vr": "SQ", "Value": items}
    match["00080052"] = {"vr": "CS", "Value": [draw(st.sampled_from(["STUDY", "IMAGE"]))]}
    return {key: match[key] for key in draw(st.permutations(list(match)))}  # in any order


REQUESTED = st.sampled_from(
    [None, "ISO_IR 192", "ISO_IR 100", "ISO_IR 144", "ISO 2022 IR 87", "ISO_IR 13", "GB18030"]
) | st.just(["ISO 2022 IR 6", "ISO 2022 IR 87"])


def through_pydicom(identifier: JsonIdentifier, syntax: tuple[bool, bool, bool]) -> bytes | None:
    return pynetdicom_encode(identifier.dataset(), *syntax)


@PROPERTIES
@given(match=matches(), requested=REQUESTED)
@example(
    match={"00100010": {"vr": "PN", "Value": [{"Ideographic": "山田"}]}}, requested="ISO_IR 192"
)
@example(match={"00081110": {"vr": "SQ", "Value": []}}, requested=None)
@example(match={"00081110": {"vr": "SQ", "Value": [{}]}}, requested=None)
@example(match={"00100010": {"vr": "PN", "Value": [{}, {"Alphabetic": "A"}]}}, requested=None)
def test_the_direct_encoding_is_the_pydicom_encoding(match: DicomJson, requested: Any) -> None:
    charset = response_charset(match, requested)
    identifier = JsonIdentifier(match, charset)
    for syntax in SYNTAXES:
        implicit, little, deflated = syntax
        direct = encode_identifier(
            match, charset, implicit_vr=implicit, little_endian=little, deflated=deflated
        )
        expected = through_pydicom(identifier, syntax)
        covered = little and charset in (None, *CODECS)
        # pydicom's own ISO 2022 and JIS X 0201 encoders fail on some values.
        assert expected or not covered, "the reference could not encode the match"
        if direct is not None:
            assert direct == expected
        elif covered:
            pytest.fail("the direct encoding declined a case it covers")
        # The seam gives pydicom's bytes whether the direct encoding took the match or not.
        assert encode(identifier, *syntax) == expected


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO 2022 IR 87", {"Alphabetic": "山田^太郎"}), ("ISO_IR 13", {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ"})],
)
def test_character_sets_with_their_own_encoders_fall_back_to_pydicom(
    charset: str, name: dict[str, str]
) -> None:
    match = {"00100010": _element("PN", [name])}
    assert response_charset(match, charset) == charset
    assert encode_identifier(match, charset, implicit_vr=False) is None
    identifier = JsonIdentifier(match, charset)
    expected = through_pydicom(identifier, (False, True, False))
    assert expected is not None
    if charset == "ISO 2022 IR 87":
        assert b"\x1b$B" in expected  # JIS X 0208 designated (PS3.5 6.1.2.5.3)
    assert encode(identifier, False, True) == expected


def test_big_endian_falls_back_to_pydicom() -> None:
    match = {"00280010": _element("US", [512]), "0020000D": _element("UI", ["1.2.3"])}
    assert encode_identifier(match, None, implicit_vr=False, little_endian=False) is None
    identifier = JsonIdentifier(match, None)
    expected = through_pydicom(identifier, (False, False, False))
    assert expected is not None and expected.startswith(b"\x00\x20\x00\x0dUI\x00\x06")
    assert encode(identifier, False, False) == expected


def test_elements_in_tag_order_padded_as_their_vr_says() -> None:
    """PS3.5 7.1 (ascending tags), 6.2 (UI padded with NUL, text with a space),
    Table 7.1-1 (SQ: a reserved field and a 4-byte length; an empty Type 2 key)."""
    match = {
        "0020000D": _element("UI", ["1.2.3"]),
        "00100010": _element("PN", [{"Alphabetic": "Müller^Zoë"}]),
        "00081110": {"vr": "SQ", "Value": []},
        "00080020": {"vr": "DA"},
    }
    assert encode_identifier(match, "ISO_IR 100", implicit_vr=False) == (
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
        b"\x08\x00\x20\x00DA\x00\x00"
        b"\x08\x00\x10\x11SQ\x00\x00\x00\x00\x00\x00"
        b"\x10\x00\x10\x00PN\x0a\x00M\xfcller^Zo\xeb"
        b"\x20\x00\x0d\x00UI\x06\x001.2.3\x00"
    )


def test_a_pending_message_carries_what_pynetdicom_builds() -> None:
    """The reused command set and the identifier are the PDVs of pynetdicom's own
    C-FIND-RSP: in one P-DATA when they fit the peer's maximum length, otherwise
    fragmented as pynetdicom fragments them (PS3.8 9.3.5, E.2)."""
    identifier = b"\x08\x00\x52\x00CS\x06\x00STUDY "
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Status = 0xFF00
    primitive.Identifier = BytesIO(identifier)
    theirs = C_FIND_RSP()
    theirs.primitive_to_message(primitive)
    ours = pending_message(3, "1.2.840.10008.5.1.4.1.2.2.1", identifier)
    command = pynetdicom_encode(theirs.command_set, True, True)
    assert command is not None
    whole = len(command) + len(identifier) + 12
    for max_pdu in (0, whole, 16384):
        [pdata] = ours.encode_msg(1, max_pdu)
        expected = [
            pdv for p in theirs.encode_msg(1, max_pdu) for pdv in p.presentation_data_value_list
        ]
        assert pdata.presentation_data_value_list == expected
    for max_pdu in (16, whole - 1):
        fragmented = [p.presentation_data_value_list for p in theirs.encode_msg(1, max_pdu)]
        assert [p.presentation_data_value_list for p in ours.encode_msg(1, max_pdu)] == fragmented
    assert ours.command_set.Status == 0xFF00
