"""Querying the SQLite catalog: the SQL pre-filter and the decoding of rows (private).

The pre-filter (PS3.4 C.2.2.2) uses indexed columns only and may let
through entities that do not match, never the reverse: the answer is
always decided by :func:`micropacs.dicom.matching.matches`.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from micropacs.adapters._sqlite_catalog_schema import (
    INDEXED,
    MODALITIES_COLUMN,
    TABLES_AT,
    Column,
    kind_of,
    normalise,
)
from micropacs.dicom import matching, tags
from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.levels import Level
from micropacs.dicom.matching import fold
from micropacs.ports import Query

FETCH = 200
"""Rows read and matched per step of a query."""

CACHE = 2000

"""Upper-level entities (patients, studies, series) kept decoded during one query."""

FROM: dict[Level, str] = {
    Level.PATIENT: "patients p",
    Level.STUDY: "studies s JOIN patients p ON p.pk = s.patient_pk",
    Level.SERIES: (
        "series se JOIN studies s ON s.study_uid = se.study_uid"
        " JOIN patients p ON p.pk = s.patient_pk"
    ),
    Level.IMAGE: (
        "instances i JOIN series se ON se.series_uid = i.series_uid"
        " JOIN studies s ON s.study_uid = i.study_uid JOIN patients p ON p.pk = s.patient_pk"
    ),
}

"""The tables a query at each level joins."""

ORDER: dict[Level, str] = {
    Level.PATIENT: "p.pk",
    Level.STUDY: "s.study_date DESC, s.study_time DESC, s.rowid",
    Level.SERIES: "se.study_uid, se.series_number, se.rowid",
    Level.IMAGE: "i.series_uid, i.instance_number, i.rowid",
}

"""A stable order of results at each level (newest studies first)."""

SELECT = (
    "p.pk, p.patient_id, p.issuer, p.n_studies, p.n_series, p.n_instances, p.attrs",
    "s.study_uid, s.n_series, s.n_instances, s.modalities, s.sop_classes, s.attrs",
    "se.series_uid, se.n_instances, se.attrs",
    "i.sop_instance_uid, i.sop_class_uid, i.attrs",
)
"""The columns each level adds to a result row, in the order :class:`Decoder` reads them."""


def select_sql(query: Query, irregular: set[str]) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) of a query's candidates, pre-filtered and ordered."""
    where, params = prefilter(query, irregular)
    sql = (
        f"SELECT {', '.join(SELECT[: len(TABLES_AT[query.level])])}"
        f" FROM {FROM[query.level]}"
        f"{' WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {ORDER[query.level]}"
    )
    return sql, params


def next_matches(
    cursor: sqlite3.Cursor, decode: Decoder, matcher: matching.Matcher, budget: matching.Budget
) -> list[DicomJson] | None:
    """The matches among the next rows of ``cursor``; None when it is exhausted.

    Each row is matched on a view of its levels' attributes, and only a match
    is built into a result; every other row is spent from ``budget``.
    """
    rows = cursor.fetchmany(FETCH)
    if not rows:
        return None
    found = []
    for row in rows:
        view = decode.view(row)
        if matcher(view):
            found.append(dict(view))
        else:
            budget.spend()
    return found


def glob(pattern: str) -> str:
    """A DICOM wildcard pattern (``*``, ``?``) as a GLOB pattern; ``[`` is literal in DICOM."""
    return pattern.replace("[", "[[]")


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xE000:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def prefilter(query: Query, irregular: set[str]) -> tuple[list[str], list[Any]]:
    """SQL conditions on indexed columns that hold for every true match (maybe more).

    ``irregular`` names the columns (``table.column``) where some row holds
    NULL because its attribute had several values: such rows always pass.
    """
    where: list[str] = []
    params: list[Any] = []
    tables = TABLES_AT[query.level]
    conditions = matching.matching_keys(
        query.identifier, case_insensitive_pn=query.case_insensitive_pn
    )
    for tag, condition in conditions.items():
        if tag == MODALITIES_COLUMN.tag and "studies" in tables:
            clause = _modalities_in_study(query, condition, irregular, params)
            if clause is not None:
                where.append(clause)
            continue
        column = INDEXED.get(tag)
        if column is None or column.table not in tables:
            continue
        # Matching interprets values by the identifier's VR; pre-filter only when it is ours.
        if kind_of(str(query.identifier[tag].get("vr", "UN"))) != column.kind:
            continue
        clause = condition_sql(column, condition, query.case_insensitive_pn, params)
        if clause is None:
            continue
        if f"{column.table}.{column.name}" in irregular:
            clause = f"({clause} OR {column.sql} IS NULL)"
        where.append(clause)
    return where, params


def _modalities_in_study(
    query: Query, condition: object, irregular: set[str], params: list[Any]
) -> str | None:
    """ModalitiesInStudy as "some series of the study has such a Modality"."""
    column = MODALITIES_COLUMN
    if kind_of(str(query.identifier[column.tag].get("vr", "UN"))) != column.kind:
        return None
    clause = condition_sql(column, condition, query.case_insensitive_pn, params)
    if clause is None:
        return None
    if "series.modality" in irregular:
        clause = f"({clause} OR {column.sql} IS NULL)"
    return f"EXISTS (SELECT 1 FROM series x WHERE x.study_uid = s.study_uid AND {clause})"


def condition_sql(
    column: Column, condition: object, case_insensitive: bool, params: list[Any]
) -> str | None:
    """One key's pre-filter on ``column`` (its values appended to ``params``), or None."""
    if column.kind not in ("pn", "da", "ui", "text"):
        return None  # numbers and times are normalised by matching in ways SQL cannot follow
    if isinstance(condition, matching.AnyOf):
        added: list[Any] = []
        parts = []
        for alternative in condition.conditions:
            part = condition_sql(column, alternative, case_insensitive, added)
            if part is None:
                return None
            parts.append(f"({part})")
        params.extend(added)
        return "(" + " OR ".join(parts) + ")" if parts else None
    if isinstance(condition, matching.UidList):
        params.append(json.dumps([normalise(v, column.kind) for v in condition.values]))
        return f"{column.sql} IN (SELECT value FROM json_each(?))"
    if isinstance(condition, matching.Range):
        if column.kind != "da":
            return None
        parts = []
        for bound, operator in ((condition.low, ">="), (condition.high, "<=")):
            if bound:
                params.append(matching.normal_date(bound))
                parts.append(f"{column.sql} {operator} ?")
        return " AND ".join(parts) or None
    folded = column.kind == "pn" and case_insensitive
    if isinstance(condition, matching.Single):
        value = normalise(condition.value, column.kind)
        params.append(fold(value) if folded else value)
        return f"{column.sql}_fold = ?" if folded else f"{column.sql} = ?"
    if isinstance(condition, matching.Wildcard) and column.kind != "da":
        pattern = normalise(condition.pattern, column.kind)
        prefix = matching.literal_prefix(pattern)
        target = column.sql
        clauses = []
        if folded:
            # Case-insensitive patterns: only the folded literal prefix narrows the search.
            target = f"{column.sql}_fold"
            prefix = fold(prefix)
        else:
            # GLOB is no backtracking regex: SQLite gives up a '*' once the rest of the
            # pattern fails at the value's end (0.1 ms at worst for capped patterns).
            params.append(glob(pattern))
            clauses.append(f"{target} GLOB ?")
        if prefix:
            # An explicit range lets SQLite use the index whatever it thinks of GLOB.
            params.append(prefix)
            clauses.append(f"{target} >= ?")
            upper = successor(prefix)
            if upper is not None:
                params.append(upper)
                clauses.append(f"{target} < ?")
        return " AND ".join(clauses) or None
    return None


@dataclass
class Decoder:
    """Turns result rows into DICOM JSON.

    The attributes a row shares with others (its patient, study and series,
    with their computed attributes) are decoded and merged once per query;
    each result is a fresh dict on top of them.
    """

    level: Level
    cache: dict[tuple[Level, Any], DicomJson] = field(default_factory=dict)

    def _part(self, level: Level, key: Any, build: Callable[[], DicomJson]) -> DicomJson:
        found = self.cache.get((level, key))
        if found is None:
            if len(self.cache) > CACHE:
                self.cache.clear()
            found = self.cache[(level, key)] = build()
        return found

    def view(self, row: tuple[Any, ...]) -> Mapping[str, Any]:
        """The attributes of one row of :func:`select_sql`, to match; ``dict()`` of it is
        the result. Nothing is copied: the upper levels are shared by the rows."""
        patient = self._part(Level.PATIENT, row[0], lambda: _patient(row))
        if self.level == Level.PATIENT:
            return patient
        study = self._part(Level.STUDY, row[7], lambda: _study(row, patient))
        if self.level == Level.STUDY:
            return study
        series = self._part(Level.SERIES, row[13], lambda: _series(row, study))
        if self.level == Level.SERIES:
            return series
        sop_uid, sop_class, attrs = row[16:19]
        keys = {
            tags.SOP_INSTANCE_UID: element("UI", sop_uid),
            tags.SOP_CLASS_UID: element("UI", sop_class),
        }
        return ChainMap(keys, json.loads(zlib.decompress(attrs)), series)

    def __call__(self, row: tuple[Any, ...]) -> DicomJson:
        """The result of one row of :func:`select_sql`."""
        return dict(self.view(row))


def _patient(row: tuple[Any, ...]) -> DicomJson:
    _, patient_id, issuer, studies, series, instances, attrs = row[:7]
    result: DicomJson = json.loads(attrs)
    result[tags.PATIENT_ID] = element("LO", patient_id)
    if issuer:
        result[tags.ISSUER_OF_PATIENT_ID] = element("LO", issuer)
    result[tags.NUMBER_OF_PATIENT_RELATED_STUDIES] = element("IS", studies)
    result[tags.NUMBER_OF_PATIENT_RELATED_SERIES] = element("IS", series)
    result[tags.NUMBER_OF_PATIENT_RELATED_INSTANCES] = element("IS", instances)
    return result


def _study(row: tuple[Any, ...], patient: DicomJson) -> DicomJson:
    study_uid, series, instances, modalities, sop_classes, attrs = row[7:13]
    result = {**patient, **json.loads(attrs)}
    result[tags.STUDY_INSTANCE_UID] = element("UI", study_uid)
    result[tags.NUMBER_OF_STUDY_RELATED_SERIES] = element("IS", series)
    result[tags.NUMBER_OF_STUDY_RELATED_INSTANCES] = element("IS", instances)
    result[tags.MODALITIES_IN_STUDY] = element("CS", *json.loads(modalities))
    result[tags.SOP_CLASSES_IN_STUDY] = element("UI", *json.loads(sop_classes))
    return result


def _series(row: tuple[Any, ...], study: DicomJson) -> DicomJson:
    series_uid, instances, attrs = row[13:16]
    result = {**study, **json.loads(attrs)}
    result[tags.SERIES_INSTANCE_UID] = element("UI", series_uid)
    result[tags.NUMBER_OF_SERIES_RELATED_INSTANCES] = element("IS", instances)
    return result
