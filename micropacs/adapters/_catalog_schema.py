"""Tables, indexed columns and attribute values of the SQLite catalog (private)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from micropacs.events import DicomJson
from micropacs.ports import Level

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; older catalogs are migrated, newer ones refused."""
MIGRATIONS = {
    1: "ALTER TABLE instances ADD COLUMN original_transfer_syntax_uid TEXT NOT NULL DEFAULT ''",
}
"""The step from each schema version to the next."""

PATIENT_ID = "00100020"
ISSUER_OF_PATIENT_ID = "00100021"
PATIENT_NAME = "00100010"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
SOP_CLASS_UID = "00080016"
MODALITY = "00080060"

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    pk INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    patient_name TEXT,
    patient_name_fold TEXT,
    birth_date TEXT,
    sex TEXT,
    n_studies INTEGER NOT NULL DEFAULT 0,
    n_series INTEGER NOT NULL DEFAULT 0,
    n_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL,
    UNIQUE (patient_id, issuer)
);
CREATE INDEX IF NOT EXISTS patients_name ON patients (patient_name);
CREATE INDEX IF NOT EXISTS patients_name_fold ON patients (patient_name_fold);
CREATE INDEX IF NOT EXISTS patients_birth_date ON patients (birth_date);
CREATE INDEX IF NOT EXISTS patients_sex ON patients (sex);

CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_pk INTEGER NOT NULL,
    study_date TEXT,
    study_time TEXT,
    accession_number TEXT,
    study_id TEXT,
    referring_physician TEXT,
    referring_physician_fold TEXT,
    description TEXT,
    modalities TEXT NOT NULL DEFAULT '[]',
    sop_classes TEXT NOT NULL DEFAULT '[]',
    n_series INTEGER NOT NULL DEFAULT 0,
    n_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_pk);
CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date, study_time);
CREATE INDEX IF NOT EXISTS studies_accession ON studies (accession_number);
CREATE INDEX IF NOT EXISTS studies_study_id ON studies (study_id);
CREATE INDEX IF NOT EXISTS studies_referring ON studies (referring_physician);
CREATE INDEX IF NOT EXISTS studies_referring_fold ON studies (referring_physician_fold);
CREATE INDEX IF NOT EXISTS studies_description ON studies (description);

CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    series_date TEXT,
    series_time TEXT,
    description TEXT,
    body_part TEXT,
    protocol_name TEXT,
    station_name TEXT,
    institution_name TEXT,
    manufacturer TEXT,
    n_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_uid, modality);
CREATE INDEX IF NOT EXISTS series_modality ON series (modality);
CREATE INDEX IF NOT EXISTS series_date ON series (series_date);
CREATE INDEX IF NOT EXISTS series_description ON series (description);
CREATE INDEX IF NOT EXISTS series_body_part ON series (body_part);
CREATE INDEX IF NOT EXISTS series_station ON series (station_name);

CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    object_key TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    size INTEGER NOT NULL,
    storage_group TEXT NOT NULL,
    received_at TEXT NOT NULL,
    attrs BLOB NOT NULL,
    original_transfer_syntax_uid TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid, instance_number);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, sop_class_uid);
CREATE INDEX IF NOT EXISTS instances_sop_class ON instances (sop_class_uid);

CREATE TABLE IF NOT EXISTS irregular_columns (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS nodes (
    ae_title TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    description TEXT NOT NULL,
    tls INTEGER NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    issuer_of_accession_number TEXT NOT NULL,
    user_id TEXT NOT NULL,
    storage_group TEXT NOT NULL,
    ae_group TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Column:
    """An indexed column holding one attribute, and the kind of matching it can pre-filter.

    ``kind`` is the matching class of the attribute's VR (see :func:`kind_of`):
    ``pn``, ``da``, ``ui`` and ``text`` columns are pre-filtered; ``number``
    and ``time`` ones only order results (their matching normalises values).
    """

    table: str
    name: str
    tag: str
    kind: str
    alias: str = ""

    @property
    def sql(self) -> str:
        """The column as the query SQL names it."""
        return f"{self.alias or ALIAS[self.table]}.{self.name}"


ALIAS = {"patients": "p", "studies": "s", "series": "se", "instances": "i"}
"""Table aliases of the query SQL."""

COLUMNS: tuple[Column, ...] = (
    Column("patients", "patient_name", PATIENT_NAME, "pn"),
    Column("patients", "birth_date", "00100030", "da"),
    Column("patients", "sex", "00100040", "text"),
    Column("studies", "study_date", "00080020", "da"),
    Column("studies", "study_time", "00080030", "time"),
    Column("studies", "accession_number", "00080050", "text"),
    Column("studies", "study_id", "00200010", "text"),
    Column("studies", "referring_physician", "00080090", "pn"),
    Column("studies", "description", "00081030", "text"),
    Column("series", "modality", MODALITY, "text"),
    Column("series", "series_number", "00200011", "number"),
    Column("series", "series_date", "00080021", "da"),
    Column("series", "series_time", "00080031", "time"),
    Column("series", "description", "0008103E", "text"),
    Column("series", "body_part", "00180015", "text"),
    Column("series", "protocol_name", "00181030", "text"),
    Column("series", "station_name", "00081010", "text"),
    Column("series", "institution_name", "00080080", "text"),
    Column("series", "manufacturer", "00080070", "text"),
    Column("instances", "instance_number", "00200013", "number"),
)
"""Indexed attributes taken from the header (besides the identity keys)."""

KEY_COLUMNS: tuple[Column, ...] = (
    Column("patients", "patient_id", PATIENT_ID, "text"),
    Column("patients", "issuer", ISSUER_OF_PATIENT_ID, "text"),
    Column("studies", "study_uid", STUDY_UID, "ui"),
    Column("series", "series_uid", SERIES_UID, "ui"),
    Column("instances", "sop_instance_uid", SOP_INSTANCE_UID, "ui"),
    Column("instances", "sop_class_uid", SOP_CLASS_UID, "ui"),
)
"""Identity keys, written from the instance record itself."""

MODALITIES_COLUMN = Column("series", "modality", "00080061", "text", alias="x")
"""ModalitiesInStudy is the set of its series' Modality: matched on them in a subquery."""

TABLES_AT: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("patients",),
    Level.STUDY: ("patients", "studies"),
    Level.SERIES: ("patients", "studies", "series"),
    Level.IMAGE: ("patients", "studies", "series", "instances"),
}
"""The tables whose attributes a result at each level holds."""

COLUMN_BY_NAME = {(c.table, c.name): c for c in COLUMNS}
"""Header columns by (table, column name)."""

INDEXED = {c.tag: c for c in (*KEY_COLUMNS, *COLUMNS)}
"""Every indexed column by the tag it holds."""

LEVEL_OF_TABLE = {
    "patients": Level.PATIENT,
    "studies": Level.STUDY,
    "series": Level.SERIES,
    "instances": Level.IMAGE,
}
"""The level whose attributes each table stores."""

_NUMBER_VRS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}


def kind_of(vr: str) -> str:
    """How values of ``vr`` are matched (micropacs.dicom.matching): the Column kinds, or sq."""
    if vr in ("PN", "DA", "UI", "SQ"):
        return vr.lower()
    if vr in ("TM", "DT"):
        return "time"
    return "number" if vr in _NUMBER_VRS else "text"


# The normalisations below are those micropacs.dicom.matching applies to stored
# values before comparing them; a column holds the normalised value so that SQL
# comparisons agree with matching. The contract tests check that they still do.


def texts_of(dataset: DicomJson, tag: str) -> list[str]:
    """The non-empty values of ``tag`` as matching sees them (a PN as its Alphabetic group)."""
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value")
    if not isinstance(values, list):
        return []
    texts = []
    for value in values:
        if isinstance(value, dict):
            text = str(value.get("Alphabetic", ""))
        else:
            text = "" if value is None else str(value)
        if text.strip():
            texts.append(text)
    return texts


def normal_pn(text: str) -> str:
    """A person name without padding or trailing empty components (PS3.5 6.2.1.1)."""
    return text.strip().rstrip("^ ").strip()


def normal_date(text: str) -> str:
    """A DA value as compared: digits of YYYYMMDD (old YYYY.MM.DD accepted)."""
    return text.strip().replace(".", "")[:8]


def normalise(text: str, kind: str) -> str:
    """A stored or queried value of a column of ``kind`` as SQL compares it."""
    if kind == "pn":
        return normal_pn(text)
    if kind == "da":
        return normal_date(text)
    return text.strip()


def column_value(dataset: DicomJson, column: Column) -> Any:
    """What the column stores: "" when empty, None (irregular) when multi-valued.

    A number column holds the integer (or None) and only orders results.
    """
    texts = texts_of(dataset, column.tag)
    if column.kind == "number":
        try:
            return int(texts[0].strip()) if len(texts) == 1 else None
        except ValueError:
            return None
    if not texts:
        return ""
    if len(texts) > 1:
        return None
    return normalise(texts[0], column.kind)


def element(vr: str, values: Iterable[Any]) -> DicomJson:
    """A DICOM JSON element; no ``Value`` when there are no values."""
    listed = list(values)
    return {"vr": vr, "Value": listed} if listed else {"vr": vr}


def dumps(dataset: DicomJson) -> str:
    """Compact JSON text of a dataset."""
    return json.dumps(dataset, separators=(",", ":"), ensure_ascii=False)
