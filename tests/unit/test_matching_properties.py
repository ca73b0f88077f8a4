"""Properties of wildcard matching (PS3.4 C.2.2.2.4), checked on generated patterns and values.

The linear matcher must agree with the plain translation of a pattern into
a regular expression (``*`` as ``.*``, ``?`` as ``.``), which is right but
may backtrack exponentially, so it is used only on small inputs here. The
catalogs' pre-filters must keep every true match: the SQLite one is run in
a real SQLite database, the MongoDB one's anchored prefix checked on the
values it must keep.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from micropacs.adapters._sqlite_catalog_query import condition_sql
from micropacs.adapters._sqlite_catalog_schema import INDEXED, normalise
from micropacs.adapters.mongo import _condition_filter
from micropacs.dicom import tags
from micropacs.dicom.matching import (
    MAX_PATTERN_LENGTH,
    MAX_STARS,
    Single,
    Wildcard,
    condition,
    fold,
    wildcard_matches,
)
from micropacs.errors import InvalidIdentifier

# Letters that fold case in unusual ways (dotless and dotted I, sharp s, the
# Kelvin sign, long s, final sigma), characters special to regular
# expressions or GLOB, and a line end. NUL is left out: no character
# repertoire of PS3.5 6.1 holds it, and SQLite's GLOB stops at it.
TRICKY = "aAbB*?ıIİißẞKk\u212aſsςσΣ.[]^$\\(\n"
CHARACTERS = st.one_of(
    st.sampled_from(TRICKY), st.characters(codec="utf-8", exclude_characters="\x00")
)
PATTERNS = st.text(st.sampled_from("ab*?"), max_size=12) | st.text(CHARACTERS, max_size=10)
VALUES = st.text(st.sampled_from("ab"), max_size=14) | st.text(CHARACTERS, max_size=12)
PROPERTIES = settings(max_examples=600, database=None)


def reference(pattern: str, text: str, fold: bool) -> bool:
    """The plain regular expression of ``pattern``: correct, and exponential at worst."""
    parts = ["." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern]
    flags = re.DOTALL | (re.IGNORECASE if fold else 0)
    return re.fullmatch("".join(parts), text, flags) is not None


@PROPERTIES
@given(pattern=PATTERNS, text=VALUES, folded=st.booleans())
@example(pattern="a*a", text="a", folded=False)
@example(pattern="*b?b*", text="abcbd", folded=False)
@example(pattern="İ*", text="i̇x", folded=True)
def test_agrees_with_the_regular_expression(pattern: str, text: str, folded: bool) -> None:
    assert wildcard_matches(pattern, text, fold=folded) is reference(pattern, text, folded)


@st.composite
def value_and_its_pattern(draw: st.DrawFn) -> tuple[str, str]:
    """A value, and a pattern made from it by turning characters into ``?`` and runs into ``*``."""
    text = draw(VALUES)
    pattern: list[str] = []
    position = 0
    while position < len(text):
        choice = draw(st.sampled_from(("keep", "keep", "one", "run")))
        if choice == "run":
            pattern.append("*")
            position += draw(st.integers(0, len(text) - position))
            continue
        character = text[position]
        pattern.append("?" if choice == "one" or character in "*?" else character)
        position += 1
    if draw(st.booleans()):
        pattern.append("*")
    return text, "".join(pattern)


@PROPERTIES
@given(value_and_its_pattern())
def test_a_value_matches_a_pattern_made_from_it(case: tuple[str, str]) -> None:
    text, pattern = case
    assert wildcard_matches(pattern, text)
    assert wildcard_matches(pattern, text, fold=True)


def sqlite_keeps(pattern: str, text: str, kind: str, folded: bool) -> bool:
    """Whether the SQLite pre-filter of a wildcard on a column of ``kind`` (PatientName for
    ``pn``, StudyDescription for ``text``) keeps a row holding ``text``, in a real SQLite."""
    db = sqlite3.connect(":memory:")
    try:
        stored = normalise(text, kind)
        if kind == "pn":
            tag, table = tags.PATIENT_NAME, "patients p"
            db.execute("CREATE TABLE patients (patient_name TEXT, patient_name_fold TEXT)")
            db.execute("INSERT INTO patients VALUES (?, ?)", (stored, fold(stored)))
        else:
            tag, table = tags.STUDY_DESCRIPTION, "studies s"
            db.execute("CREATE TABLE studies (description TEXT)")
            db.execute("INSERT INTO studies VALUES (?)", (stored,))
        params: list[Any] = []
        clause = condition_sql(INDEXED[tag], Wildcard(pattern), folded, params)
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {clause}" if clause else "")
        return bool(db.execute(sql, params).fetchone()[0] == 1)
    finally:
        db.close()


@PROPERTIES
@given(pattern=PATTERNS.filter(lambda p: "*" in p or "?" in p), text=VALUES, folded=st.booleans())
@example(pattern="İ*", text="iX", folded=True)
@example(pattern="[a]*", text="[a]", folded=False)
def test_the_sqlite_prefilter_keeps_every_match(pattern: str, text: str, folded: bool) -> None:
    for kind in ("text", "pn"):
        # the pattern as matching_keys leaves it, the value as the catalog stores it
        wild, stored = normalise(pattern, kind), normalise(text, kind)
        if wildcard_matches(wild, stored, fold=folded and kind == "pn"):
            assert sqlite_keeps(wild, text, kind, folded)


@PROPERTIES
@given(pattern=PATTERNS.filter(lambda p: "*" in p or "?" in p), text=VALUES, folded=st.booleans())
@example(pattern="a.b(*", text="a.b(c", folded=False)
@example(pattern="İ*", text="iX", folded=True)
def test_the_mongo_prefilter_keeps_every_match(pattern: str, text: str, folded: bool) -> None:
    text = text.strip()
    for kind in ("text", "pn"):
        wild, stored = normalise(pattern, kind), normalise(text, kind)
        if not wildcard_matches(wild, stored, fold=folded and kind == "pn"):
            continue
        found = _condition_filter("f", kind, Wildcard(wild), folded)
        if found is None:
            continue
        regex = next(iter(found.values()))["$regex"]
        # an anchored, escaped literal: nothing in it can backtrack
        literal = re.sub(r"\\(.)", r"\1", regex[1:], flags=re.DOTALL)
        assert regex == "^" + re.escape(literal)
        assert (fold(stored) if kind == "pn" and folded else stored).startswith(literal)


@PROPERTIES
@given(pattern=st.text(st.sampled_from("ab*?"), min_size=MAX_PATTERN_LENGTH - 4, max_size=300))
def test_patterns_beyond_the_caps_are_refused(pattern: str) -> None:
    element = {"vr": "LO", "Value": ["x" + pattern]}
    too_long = len(pattern) + 1 > MAX_PATTERN_LENGTH
    too_many = pattern.count("*") > MAX_STARS
    try:
        found = condition(element)
    except InvalidIdentifier:
        assert too_long or too_many
    else:
        assert not (too_long or too_many)
        wild = "*" in pattern or "?" in pattern
        assert found == (Wildcard("x" + pattern) if wild else Single("x" + pattern))


def test_the_mongo_prefix_stops_at_a_nul() -> None:
    """MongoDB refuses a regular expression holding NUL: the prefix sent stops before it."""
    assert _condition_filter("f", "text", Wildcard("ab\x00c*"), False) == {"f": {"$regex": "^ab"}}
    assert _condition_filter("f", "text", Wildcard("\x00c*"), False) is None
