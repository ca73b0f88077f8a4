"""The MongoDB catalog's filters: shaped for FerretDB's pushdown, never dropping a match."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from micropacs.adapters._mongo_write import date_keys, prefix_keys
from micropacs.adapters.mongo import _narrowing, flat_filter, query_filter
from micropacs.dicom import matching, tags
from micropacs.dicom.json_model import element
from micropacs.dicom.levels import Level


def test_each_fields_first_condition_stands_at_the_top_level() -> None:
    clauses: list[dict[str, Any]] = [
        {"patient_id": "P1"},
        {"$or": [{"a": 1}, {"a": None}]},
        {"patient_id": {"$regex": "^P"}},
        {"study_date": {"$gte": "20240101"}},
    ]
    assert flat_filter(clauses) == {
        "patient_id": "P1",
        "study_date": {"$gte": "20240101"},
        "$and": [{"$or": [{"a": 1}, {"a": None}]}, {"patient_id": {"$regex": "^P"}}],
    }
    assert flat_filter([]) == {}


def test_a_study_query_asks_for_equalities_on_its_key_arrays() -> None:
    conditions = matching.matching_keys(
        {
            tags.PATIENT_NAME: element("PN", "Müller^H*"),
            tags.STUDY_DATE: element("DA", "20240301-20240315"),
            tags.ACCESSION_NUMBER: element("SH", "A1"),
        }
    )
    found = query_filter(Level.STUDY, conditions, fold=False)
    assert found["patient_name_prefixes"] == "müller^h"
    assert found["study_date_keys"] == "202403"
    assert found["accession_number"] == "A1"
    assert found["patient_name"] == {"$regex": "^Müller\\^H"}


def test_ranges_across_years_or_open_ones_ask_for_no_key() -> None:
    assert _narrowing("study_date", "da", matching.Range("20231201", "20240131")) is None
    assert _narrowing("study_date", "da", matching.Range("20240101", None)) is None
    assert _narrowing("study_date", "da", matching.Range("20240101", "20241231")) == {
        "study_date_keys": "2024"
    }


names = st.text(st.sampled_from("aAbBßİıé^ *?"), min_size=1, max_size=12)


@given(names, st.integers(1, 12), st.booleans())
def test_a_name_wildcard_key_is_among_the_keys_of_every_name_it_matches(
    name: str, cut: int, fold: bool
) -> None:
    value = matching.normal_pn(name.replace("*", "").replace("?", ""))
    if not value:
        return
    pattern = value[:cut] + "*"
    cond = matching.matching_keys({tags.PATIENT_NAME: element("PN", pattern)})[tags.PATIENT_NAME]
    if not isinstance(cond, matching.Wildcard):
        return
    matcher = matching.Matcher(
        {tags.PATIENT_NAME: element("PN", pattern)}, case_insensitive_pn=fold
    )
    if not matcher({tags.PATIENT_NAME: element("PN", value)}):
        return
    narrowing = _narrowing("patient_name", "pn", cond)
    assert narrowing is None or narrowing["patient_name_prefixes"] in prefix_keys(
        [matching.fold(value)]
    )


@given(st.dates(), st.dates(), st.dates())
def test_a_date_range_key_is_among_the_keys_of_every_date_in_it(
    a: object, b: object, c: object
) -> None:
    low, day, high = sorted(str(d).replace("-", "") for d in (a, b, c))
    narrowing = _narrowing("study_date", "da", matching.Range(low, high))
    assert narrowing is None or narrowing["study_date_keys"] in date_keys([day])
