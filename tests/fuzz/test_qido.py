"""Fuzzing QIDO-RS query parameters (PS3.18 8.3.4, 10.6) on their way to a matcher.

:func:`~micropacs.dicomweb.qido.parse` returns a query or raises
:class:`~micropacs.errors.InvalidInput` (an answer 400), whatever the names
and values, non-ASCII included; the identifier it builds is DICOM JSON that
:class:`~micropacs.dicom.matching.Matcher` takes or refuses with
:class:`~micropacs.errors.InvalidIdentifier`; and nothing a client sent ends
up in the warnings, which go into a response header.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import strategies as st
from pydicom.datadict import keyword_dict

from micropacs.dicom.levels import Level
from micropacs.dicom.matching import Matcher
from micropacs.dicomweb import qido
from micropacs.errors import InvalidIdentifier, InvalidInput
from tests.fuzz.conftest import fuzz

KEYWORDS = sorted(keyword_dict)
CONTROL = ("includefield", "limit", "offset", "fuzzymatching", "IncludeField", "LIMIT")


def _recased(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))
    )


NAMES = st.one_of(
    st.sampled_from(CONTROL).flatmap(_recased),
    st.sampled_from(KEYWORDS),
    st.integers(0, 0xFFFFFFFF).map(lambda tag: f"{tag:08x}"),
    st.sampled_from(KEYWORDS).map(lambda k: k + "." + k),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("0123456789-*?,.\\^= aZ"), max_size=40),
    st.lists(st.sampled_from(KEYWORDS), max_size=4).map(",".join),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(("true", "TRUE", "false", "all", "", " ", "*", "-", "1.2.840.10008")),
)
PARAMETERS = st.lists(st.tuples(NAMES, VALUES), max_size=8)


def check(case: tuple[Level, list[tuple[str, str]], dict[str, str]]) -> None:
    level, params, fixed = case
    try:
        query = qido.parse(level, params, fixed)
    except InvalidInput:
        return
    assert query.limit >= 0 and query.offset >= 0
    assert all(w == qido.FUZZY_IGNORED for w in query.warnings)
    for tag, element in query.identifier.items():
        assert len(tag) == 8 and int(tag, 16) >= 0
        assert isinstance(element, dict) and isinstance(element.get("vr"), str)
    json.dumps(query.identifier)
    with contextlib.suppress(InvalidIdentifier):
        Matcher(query.identifier)


CASES = st.tuples(
    st.sampled_from(list(qido.DEFAULT_KEYS)),  # the levels QIDO-RS has (PS3.18 10.6)
    PARAMETERS,
    st.dictionaries(
        st.sampled_from(("StudyInstanceUID", "SeriesInstanceUID")), st.text(max_size=70)
    ),
)


def test_qido_parameters_parse_or_are_refused() -> None:
    fuzz("qido parse", CASES, check, weight=3)
