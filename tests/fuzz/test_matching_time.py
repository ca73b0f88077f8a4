"""Fuzzing wildcard matching (PS3.4 C.2.2.2.4) for time: adversarial patterns and values.

Correctness is checked in ``tests/unit/test_matching_properties.py``; here the
inputs are the worst a client can send (up to :data:`MAX_PATTERN_LENGTH`
characters of ``*``, ``?`` and a letter or two, against long runs of the same
letters) and the target records the slowest single match: matching must
stay linear, however the pattern is built. A pattern beyond the caps must be
refused with :class:`~micropacs.errors.InvalidIdentifier`.
"""

from __future__ import annotations

import gc
import time

from hypothesis import strategies as st

from micropacs.dicom.matching import (
    MAX_PATTERN_LENGTH,
    MAX_STARS,
    Matcher,
    Wildcard,
    condition,
)
from micropacs.errors import InvalidIdentifier
from tests.fuzz.conftest import fuzz

STEP = 5e-6
"""CPU seconds one match may take per (value length + 1) × (pattern length + 1), the bound
:func:`~micropacs.dicom.matching.wildcard_matches` documents, plus :data:`SLACK`: a
backtracking matcher takes seconds to years on these inputs."""
SLACK = 0.01

PATTERN = st.one_of(
    st.text(st.sampled_from("a*?"), max_size=MAX_PATTERN_LENGTH + 8),
    st.text(st.sampled_from("ab*?"), max_size=MAX_PATTERN_LENGTH + 8),
    st.tuples(st.integers(1, MAX_STARS + 2), st.sampled_from(("a", "a?", "?a", "ab", "?"))).map(
        lambda pair: "*" + "*".join([pair[1]] * pair[0]) + "*b"
    ),
    st.text(max_size=64),
)
VALUE = st.one_of(
    st.integers(0, 4096).map(lambda n: "a" * n),
    st.tuples(st.integers(0, 2048), st.sampled_from(("b", "c", ""))).map(
        lambda pair: "a" * pair[0] + pair[1]
    ),
    st.text(st.sampled_from("ab"), max_size=512),
    st.text(max_size=64),
)
VRS = st.sampled_from(("LO", "PN", "SH", "UT", "CS"))


def check(case: tuple[str, str, str, bool]) -> None:
    pattern, value, vr, folded = case
    element = {"vr": vr, "Value": [{"Alphabetic": pattern} if vr == "PN" else pattern]}
    try:
        found = condition(element)
    except InvalidIdentifier:
        assert len(pattern.strip()) > MAX_PATTERN_LENGTH or pattern.count("*") > MAX_STARS
        return
    if not isinstance(found, Wildcard):
        return
    matcher = Matcher({"00100010": element}, case_insensitive_pn=folded)
    stored = {"vr": vr, "Value": [{"Alphabetic": value} if vr == "PN" else value]}
    # This thread's CPU time, with the collector held off: other threads of the test
    # process (servers of earlier tests) holding the GIL, the machine's other load and a
    # full collection of the whole heap are not the matcher's time.
    gc.disable()
    try:
        start = time.thread_time()
        matcher({"00100010": stored})
        elapsed = time.thread_time() - start
    finally:
        gc.enable()
    bound = SLACK + STEP * (len(value) + 1) * (len(pattern) + 1)
    assert elapsed < bound, f"one match took {elapsed * 1000:.1f} ms"


def test_wildcard_matching_stays_linear() -> None:
    fuzz("wildcard matching", st.tuples(PATTERN, VALUE, VRS, st.booleans()), check, weight=3)
