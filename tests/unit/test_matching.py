"""Attribute matching as PS3.4 C.2.2.2 defines it."""

from __future__ import annotations

from typing import Any

import pytest

from micropacs.dicom.matching import (
    MAX_PATTERN_LENGTH,
    MAX_STARS,
    AnyOf,
    Range,
    SequenceMatch,
    Single,
    UidList,
    Universal,
    Wildcard,
    condition,
    literal_prefix,
    matches,
    matching_keys,
    wildcard_matches,
)
from micropacs.errors import InvalidIdentifier


def pn(*names: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": n} for n in names]}


def el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


RECORD = {
    "00100010": pn("Dvořák^Antonín"),
    "00100020": el("LO", "PID-001"),
    "00080020": el("DA", "20240315"),
    "00080030": el("TM", "101530.25"),
    "0008002A": el("DT", "20240315101530"),
    "00080061": el("CS", "CT", "SR"),
    "0020000D": el("UI", "1.2.3.4"),
    "00200013": el("IS", 5),
    "00081030": el("LO", "CT ABDOMEN"),
    "00081032": el("SQ", {"00080100": el("SH", "X1"), "00080102": el("SH", "LOCAL")}),
    "00081050": el("PN"),
}


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ({"00100010": pn("Dvořák^Antonín")}, True),
        ({"00100010": pn("Dvořák^Antonín^^^")}, True),  # trailing empty components
        ({"00100010": pn("dvořák^antonín")}, False),  # case-sensitive by default
        ({"00100010": pn("Dvo*")}, True),
        ({"00100010": pn("Dvo?ák*")}, True),  # ? matches one non-ASCII character
        ({"00100010": pn("Dvo?k*")}, False),
        ({"00100010": pn("*Antonín")}, True),
        ({"00100010": pn("Smith*")}, False),
        ({"00100020": el("LO", "PID-001")}, True),
        ({"00100020": el("LO", "PID-00")}, False),
        ({"00100020": el("LO", "PID-00?")}, True),
        ({"00100020": el("LO", "*")}, True),  # universal
        ({"00100020": el("LO")}, True),  # return key only
        ({"00080020": el("DA", "20240315")}, True),
        ({"00080020": el("DA", "20240314")}, False),
        ({"00080020": el("DA", "20240101-20241231")}, True),
        ({"00080020": el("DA", "20240315-20240315")}, True),  # inclusive bounds
        ({"00080020": el("DA", "20240316-")}, False),
        ({"00080020": el("DA", "20240315-")}, True),
        ({"00080020": el("DA", "-20240315")}, True),
        ({"00080020": el("DA", "-20240314")}, False),
        ({"00080030": el("TM", "1015-1016")}, True),
        ({"00080030": el("TM", "-1015")}, True),  # 1015 reaches 10:15:59.999999
        ({"00080030": el("TM", "-101530")}, True),
        ({"00080030": el("TM", "-101529")}, False),
        ({"00080030": el("TM", "1016-")}, False),
        ({"0008002A": el("DT", "20240315-20240316")}, True),
        ({"0008002A": el("DT", "202403151016-")}, False),
        ({"00080061": el("CS", "CT")}, True),  # any stored value matches
        ({"00080061": el("CS", "MR")}, False),
        ({"00080061": el("CS", "MR", "SR")}, True),  # any of several values
        ({"0020000D": el("UI", "1.2.3.4")}, True),
        ({"0020000D": el("UI", "1.2.3.5")}, False),
        ({"0020000D": el("UI", "1.2.3.5", "1.2.3.4")}, True),  # list of UIDs
        ({"0020000D": el("UI", "1.2.3.5", "1.2.3.6")}, False),
        ({"00200013": el("IS", "5")}, True),
        ({"00200013": el("IS", "05")}, True),
        ({"00200013": el("IS", "6")}, False),
        ({"00081032": el("SQ", {"00080100": el("SH", "X1")})}, True),
        ({"00081032": el("SQ", {"00080100": el("SH", "X2")})}, False),
        ({"00081032": el("SQ", {"00080100": el("SH", "X1"), "00080102": el("SH", "99")})}, False),
        ({"00081032": el("SQ", {})}, True),  # empty item: universal
        ({"00081032": el("SQ")}, True),
        ({"00081050": pn("Someone")}, False),  # empty stored value matches only universal
        ({"00081050": pn("*")}, True),
        ({"00104000": el("LT", "anything")}, False),  # absent attribute
        ({"00104000": el("LT")}, True),
        ({"00100010": pn("Dvo*"), "00100020": el("LO", "PID-001")}, True),
        ({"00100010": pn("Dvo*"), "00100020": el("LO", "OTHER")}, False),
        ({"00080052": el("CS", "STUDY"), "00080005": el("CS", "ISO_IR 192")}, True),
    ],
)
def test_matches(identifier: dict[str, Any], expected: bool) -> None:
    assert matches(RECORD, identifier) is expected


def test_case_insensitive_person_names_are_an_option() -> None:
    assert matches(RECORD, {"00100010": pn("dvořák^antonín")}, case_insensitive_pn=True)
    assert matches(RECORD, {"00100010": pn("DVO*")}, case_insensitive_pn=True)
    assert not matches(RECORD, {"00100010": pn("dvorak*")}, case_insensitive_pn=True)
    # only person names fold case
    assert not matches(RECORD, {"00081030": el("LO", "ct abdomen")}, case_insensitive_pn=True)


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (el("LO"), Universal()),
        (el("LO", ""), Universal()),
        (el("LO", "**"), Universal()),
        (el("LO", "AB"), Single("AB")),
        (el("LO", " AB "), Single("AB")),
        (el("LO", "A*B?"), Wildcard("A*B?")),
        (el("DA", "20240101-"), Range("20240101", None)),
        (el("DA", "-20240101"), Range(None, "20240101")),
        (el("TM", "0800-1000"), Range("0800", "1000")),
        (el("DA", "20240101"), Single("20240101")),
        (el("UI", "1.2", "1.3"), UidList(("1.2", "1.3"))),
        (el("UI", "1.2"), Single("1.2")),
        (el("CS", "CT", "MR"), AnyOf((Single("CT"), Single("MR")))),
        (el("SQ", {"00080100": el("SH", "X")}), SequenceMatch({"00080100": el("SH", "X")})),
    ],
)
def test_condition_of_each_kind(element: dict[str, Any], expected: object) -> None:
    assert condition(element) == expected


def test_sequence_key_with_two_items_is_refused() -> None:
    with pytest.raises(InvalidIdentifier):
        condition(el("SQ", {"00080100": el("SH", "X")}, {"00080100": el("SH", "Y")}))


def test_matching_keys_skip_return_keys_and_control_attributes() -> None:
    identifier = {
        "00080052": el("CS", "STUDY"),
        "00080005": el("CS", "ISO_IR 100"),
        "00100010": pn("A*"),
        "00100020": el("LO"),
    }
    assert matching_keys(identifier) == {"00100010": Wildcard("A*")}


def test_literal_prefix() -> None:
    assert literal_prefix("Dvo*") == "Dvo"
    assert literal_prefix("D?o*") == "D"
    assert literal_prefix("*x") == ""
    assert literal_prefix("exact") == "exact"


def test_wildcard_characters_are_not_regular_expressions() -> None:
    record = {"00081030": el("LO", "A.B(C)[1]+")}
    assert matches(record, {"00081030": el("LO", "A.B(C)[1]+")})
    assert matches(record, {"00081030": el("LO", "A.B(*")})
    assert not matches({"00081030": el("LO", "AxB(C)[1]+")}, {"00081030": el("LO", "A.B*")})


def star_runs(length: int) -> str:
    """``*a*a…*b``: the shape that made a backtracking matcher take 3x longer per 2 more
    characters of ``aaaa…`` (4 s at 28), at most MAX_STARS ``*`` and MAX_PATTERN_LENGTH long."""
    unit = "a" * max(1, (length - MAX_STARS) // MAX_STARS)
    return ("*" + unit) * (MAX_STARS - 1) + "*b"


PATHOLOGICAL = [
    "*a" * 14 + "*b",  # 4 s against 28 "a" with the regex this matcher replaces
    *(star_runs(n) for n in (28, 64, MAX_PATTERN_LENGTH)),
    "*a" * (MAX_STARS - 1) + "*b",
    "*?" * (MAX_STARS - 1) + "*b",
    "*" + "a?" * 100 + "*b",
    ("*" + "?" * 7) * (MAX_STARS - 1) + "*b",
    "a" * 200 + "*" + "a" * 54 + "b",
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("pattern", PATHOLOGICAL)
@pytest.mark.parametrize("length", [28, 64, MAX_PATTERN_LENGTH, 10_240])
def test_pathological_wildcards_answer_at_once(pattern: str, length: int) -> None:
    assert len(pattern) <= MAX_PATTERN_LENGTH and pattern.count("*") <= MAX_STARS
    stored = "a" * length
    description, name = "00081030", "00100010"
    record = {description: el("LO", stored), name: pn(stored)}
    for fold in (False, True):
        for query in ({description: el("LO", pattern)}, {name: pn(pattern)}):
            assert not matches(record, query, case_insensitive_pn=fold)
        # ending in "a" instead, it matches when the value is long enough for its letters
        ending_in_a = pattern[:-1] + "a"
        fits = len(ending_in_a.replace("*", "")) <= length
        assert wildcard_matches(ending_in_a, stored, fold=fold) is fits


def test_wildcard_pieces_are_found_leftmost_in_order() -> None:
    assert wildcard_matches("a*b*c", "aXbYbZc")
    assert wildcard_matches("*b?b*", "abcbd")
    assert wildcard_matches("a*a", "aa")
    assert not wildcard_matches("a*a", "a")  # head and tail cannot share a character
    assert not wildcard_matches("*c*b*", "abc")
    assert wildcard_matches("***", "")
    assert wildcard_matches("a**", "a")
    assert not wildcard_matches("?", "")
    assert wildcard_matches("?*?", "ab")
    assert wildcard_matches("X*\n*Y", "X\nY")  # ? and * cross line ends
    assert wildcard_matches("DVO*", "Dvořák", fold=True)
    assert not wildcard_matches("DVO*", "Dvořák")


def test_pattern_longer_than_the_cap_is_refused_saying_the_limit() -> None:
    at_cap = "A" * (MAX_PATTERN_LENGTH - 1) + "*"
    assert condition(el("LO", at_cap)) == Wildcard(at_cap)
    with pytest.raises(InvalidIdentifier, match=f"at most {MAX_PATTERN_LENGTH} characters"):
        condition(el("LO", "A" + at_cap))
    with pytest.raises(InvalidIdentifier, match=f"at most {MAX_PATTERN_LENGTH} characters"):
        matching_keys({"00100010": pn("B" * MAX_PATTERN_LENGTH + "?")})


def test_pattern_with_too_many_stars_is_refused_saying_the_limit() -> None:
    at_cap = "*x" * MAX_STARS
    assert condition(el("LO", at_cap)) == Wildcard(at_cap)
    with pytest.raises(InvalidIdentifier, match=f"at most {MAX_STARS} '\\*'"):
        condition(el("LO", at_cap + "*"))
    # stars alone are universal matching, whatever their number (C.2.2.2.3)
    assert condition(el("LO", "*" * 1000)) == Universal()
