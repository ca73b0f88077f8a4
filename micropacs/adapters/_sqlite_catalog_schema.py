"""Tables, indexed columns and attribute values of the SQLite catalog (private)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.dicom.levels import Level
from micropacs.dicom.matching import NUMERIC_VRS, normal_date, normal_pn

SCHEMA_VERSION = 8
"""Stored in ``PRAGMA user_version``; older catalogs are migrated, newer ones refused."""
PATIENT_UPDATES = """
CREATE TABLE IF NOT EXISTS patient_updates (
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    attrs TEXT NOT NULL,
    merged_into_id TEXT,
    merged_into_issuer TEXT,
    PRIMARY KEY (patient_id, issuer)
) WITHOUT ROWID
"""
"""The RIS's demographics of a patient (HL7 ADT) and, once merged, whom into."""
REJECTIONS = (
    """
CREATE TABLE IF NOT EXISTS rejections (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    note_uid TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    sop_class_uid TEXT,
    object_key TEXT,
    transfer_syntax_uid TEXT,
    size INTEGER,
    received_at TEXT,
    patient_id TEXT,
    issuer TEXT
) WITHOUT ROWID
""",
    "CREATE INDEX IF NOT EXISTS rejections_held ON rejections (rejected_at)"
    " WHERE object_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS rejections_study ON rejections (study_uid, series_uid)"
    " WHERE object_key IS NOT NULL",
)
"""IOCM rejections by SOP Instance UID (:mod:`._sqlite_catalog_rejections`), and the held
rejected instances by rejection time (their deletion) and by study (a removal).
``object_key`` is NULL while the instance is not held (not stored yet, or deleted);
``series_uid`` and ``study_uid`` are the note's until the instance is held, then its own."""
STORAGE_USAGE = (
    """
CREATE TABLE IF NOT EXISTS storage_usage (
    storage_group TEXT PRIMARY KEY,
    instances INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID
""",
    """
CREATE TRIGGER IF NOT EXISTS storage_usage_added AFTER INSERT ON instances BEGIN
    INSERT OR IGNORE INTO storage_usage VALUES (NEW.storage_group, 0, 0);
    UPDATE storage_usage SET instances = instances + 1, bytes = bytes + NEW.size
        WHERE storage_group = NEW.storage_group;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS storage_usage_removed AFTER DELETE ON instances BEGIN
    UPDATE storage_usage SET instances = instances - 1, bytes = bytes - OLD.size
        WHERE storage_group = OLD.storage_group;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS storage_usage_replaced
AFTER UPDATE OF size, storage_group ON instances BEGIN
    UPDATE storage_usage SET instances = instances - 1, bytes = bytes - OLD.size
        WHERE storage_group = OLD.storage_group;
    INSERT OR IGNORE INTO storage_usage VALUES (NEW.storage_group, 0, 0);
    UPDATE storage_usage SET instances = instances + 1, bytes = bytes + NEW.size
        WHERE storage_group = NEW.storage_group;
END
""",
)
"""Instances and bytes per storage group, kept by triggers in the transaction of every write
to ``instances`` (stores, re-stores, moves, rejections, deletions), so the status reads a
handful of rows instead of summing every instance."""
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE instances ADD COLUMN original_transfer_syntax_uid TEXT NOT NULL DEFAULT ''",),
    # Nodes registered before access control keep doing everything, from their host.
    2: (
        "ALTER TABLE nodes ADD COLUMN may_store INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE nodes ADD COLUMN may_query INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE nodes ADD COLUMN may_retrieve INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE nodes ADD COLUMN may_be_move_destination INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE nodes ADD COLUMN allowed_from TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE nodes ADD COLUMN from_host INTEGER NOT NULL DEFAULT 1",
    ),
    # Nodes registered before certificates were bound to nodes are bound to none.
    3: ("ALTER TABLE nodes ADD COLUMN tls_certificates TEXT NOT NULL DEFAULT '[]'",),
    # Patient updates and merges from the RIS (none before).
    4: (PATIENT_UPDATES,),
    # The storage groups' aggregate, summed once from the instances already stored.
    5: (
        *STORAGE_USAGE,
        "INSERT OR REPLACE INTO storage_usage"
        " SELECT storage_group, count(*), coalesce(sum(size), 0) FROM instances"
        " GROUP BY storage_group",
    ),
    # Checksums recorded at store time; instances indexed before have none ("").
    6: ("ALTER TABLE instances ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''",),
    # IOCM rejections (none before).
    7: REJECTIONS,
}
"""The statements of the step from each schema version to the next, run in one transaction."""

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
    original_transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid, instance_number);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, sop_class_uid);
CREATE INDEX IF NOT EXISTS instances_sop_class ON instances (sop_class_uid);

CREATE TABLE IF NOT EXISTS patient_updates (
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    attrs TEXT NOT NULL,
    merged_into_id TEXT,
    merged_into_issuer TEXT,
    PRIMARY KEY (patient_id, issuer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS patient_updates_merged
    ON patient_updates (merged_into_id, merged_into_issuer);

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
    ae_group TEXT NOT NULL,
    may_store INTEGER NOT NULL DEFAULT 1,
    may_query INTEGER NOT NULL DEFAULT 1,
    may_retrieve INTEGER NOT NULL DEFAULT 1,
    may_be_move_destination INTEGER NOT NULL DEFAULT 1,
    allowed_from TEXT NOT NULL DEFAULT '[]',
    from_host INTEGER NOT NULL DEFAULT 1,
    tls_certificates TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE IF NOT EXISTS credentials (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    description TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
""" + "".join(f"{statement.strip()};\n" for statement in REJECTIONS)

SCHEMA += "".join(f"{statement.strip()};\n" for statement in STORAGE_USAGE)


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
    Column("patients", "patient_name", tags.PATIENT_NAME, "pn"),
    Column("patients", "birth_date", tags.PATIENT_BIRTH_DATE, "da"),
    Column("patients", "sex", tags.PATIENT_SEX, "text"),
    Column("studies", "study_date", tags.STUDY_DATE, "da"),
    Column("studies", "study_time", tags.STUDY_TIME, "time"),
    Column("studies", "accession_number", tags.ACCESSION_NUMBER, "text"),
    Column("studies", "study_id", tags.STUDY_ID, "text"),
    Column("studies", "referring_physician", tags.REFERRING_PHYSICIAN_NAME, "pn"),
    Column("studies", "description", tags.STUDY_DESCRIPTION, "text"),
    Column("series", "modality", tags.MODALITY, "text"),
    Column("series", "series_number", tags.SERIES_NUMBER, "number"),
    Column("series", "series_date", tags.SERIES_DATE, "da"),
    Column("series", "series_time", tags.SERIES_TIME, "time"),
    Column("series", "description", tags.SERIES_DESCRIPTION, "text"),
    Column("series", "body_part", tags.BODY_PART_EXAMINED, "text"),
    Column("series", "protocol_name", tags.PROTOCOL_NAME, "text"),
    Column("series", "station_name", tags.STATION_NAME, "text"),
    Column("series", "institution_name", tags.INSTITUTION_NAME, "text"),
    Column("series", "manufacturer", tags.MANUFACTURER, "text"),
    Column("instances", "instance_number", tags.INSTANCE_NUMBER, "number"),
)
"""Indexed attributes taken from the header (besides the identity keys)."""

KEY_COLUMNS: tuple[Column, ...] = (
    Column("patients", "patient_id", tags.PATIENT_ID, "text"),
    Column("patients", "issuer", tags.ISSUER_OF_PATIENT_ID, "text"),
    Column("studies", "study_uid", tags.STUDY_INSTANCE_UID, "ui"),
    Column("series", "series_uid", tags.SERIES_INSTANCE_UID, "ui"),
    Column("instances", "sop_instance_uid", tags.SOP_INSTANCE_UID, "ui"),
    Column("instances", "sop_class_uid", tags.SOP_CLASS_UID, "ui"),
)
"""Identity keys, written from the instance record itself."""

MODALITIES_COLUMN = Column("series", "modality", tags.MODALITIES_IN_STUDY, "text", alias="x")
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


def kind_of(vr: str) -> str:
    """How values of ``vr`` are matched (micropacs.dicom.matching): the Column kinds, or sq."""
    if vr in ("PN", "DA", "UI", "SQ"):
        return vr.lower()
    if vr in ("TM", "DT"):
        return "time"
    return "number" if vr in NUMERIC_VRS else "text"


# The normalisations below are those micropacs.dicom.matching applies to stored
# values before comparing them; a column holds the normalised value so that SQL
# comparisons agree with matching. The contract tests check that they still do.


def texts_of(dataset: DicomJson, tag: str) -> list[str]:
    """The non-empty values of ``tag`` as matching sees them (a PN as its Alphabetic group)."""
    return text_of(dataset.get(tag), skip_blank=True)


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


def dumps(dataset: DicomJson) -> str:
    """Compact JSON text of a dataset."""
    return json.dumps(dataset, separators=(",", ":"), ensure_ascii=False)
