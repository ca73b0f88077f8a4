"""Patient updates and merges in the SQLite catalog (private).

Each function runs inside the writer's open transaction, so an update or a
merge and a batch of instances never interleave: whichever comes first, the
catalog ends as if the RIS's change had come before the objects.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from micropacs.adapters._patients import patient_attributes, with_identity
from micropacs.adapters._sqlite_catalog_schema import COLUMNS, column_value, dumps
from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.matching import fold

Key = tuple[str, str]
"""A patient's PatientID and IssuerOfPatientID."""


def resolve(conn: sqlite3.Connection, keys: set[Key]) -> dict[Key, tuple[Key, DicomJson, bool]]:
    """For each of ``keys`` the RIS changed: the patient it is filed under (itself, or
    the survivor it was merged into), that patient's RIS attributes, and whether it is
    a survivor the catalog already holds (see :func:`filed_under`)."""
    found: dict[Key, tuple[Key, DicomJson, bool]] = {}
    for key in keys:
        row = conn.execute(
            "SELECT attrs, merged_into_id, merged_into_issuer FROM patient_updates"
            " WHERE patient_id = ? AND issuer = ?",
            key,
        ).fetchone()
        if row is None:
            continue
        if row[1] is None:
            found[key] = (key, json.loads(row[0]), False)
            continue
        target = (str(row[1]), str(row[2]))
        survivor = conn.execute(
            "SELECT attrs FROM patient_updates WHERE patient_id = ? AND issuer = ?", target
        ).fetchone()
        held = conn.execute(
            "SELECT 1 FROM patients WHERE patient_id = ? AND issuer = ?", target
        ).fetchone()
        found[key] = (target, json.loads(survivor[0]) if survivor else {}, held is not None)
    return found


def update(conn: sqlite3.Connection, key: Key, attributes: DicomJson) -> int:
    """Record the RIS's demographics of ``key`` and apply them; studies changed."""
    recorded = conn.execute(
        "SELECT attrs FROM patient_updates WHERE patient_id = ? AND issuer = ?", key
    ).fetchone()
    # An update names only what changed (HL7 v2: an absent field is no change).
    known = json.loads(recorded[0]) if recorded else {}
    attrs = with_identity({**known, **patient_attributes(attributes)}, *key)
    conn.execute(
        "INSERT INTO patient_updates (patient_id, issuer, attrs) VALUES (?, ?, ?)"
        " ON CONFLICT (patient_id, issuer) DO UPDATE SET attrs = excluded.attrs",
        (*key, dumps(attrs)),
    )
    merged = conn.execute(
        "SELECT merged_into_id FROM patient_updates WHERE patient_id = ? AND issuer = ?", key
    ).fetchone()[0]
    if merged is not None:
        return 0
    row = conn.execute(
        "SELECT pk, attrs, n_studies FROM patients WHERE patient_id = ? AND issuer = ?", key
    ).fetchone()
    if row is None:
        return 0
    _set_attrs(conn, int(row[0]), {**json.loads(row[1]), **attrs})
    return int(row[2])


def merge(conn: sqlite3.Connection, prior: Key, survivor: Key) -> int:
    """Merge ``prior`` into ``survivor``; studies moved."""
    if prior == survivor:
        return 0
    # The survivor named by the latest merge is alive, even if it was merged before.
    conn.execute(
        "INSERT INTO patient_updates (patient_id, issuer, attrs) VALUES (?, ?, ?)"
        " ON CONFLICT (patient_id, issuer) DO UPDATE SET merged_into_id = NULL,"
        " merged_into_issuer = NULL",
        (*survivor, dumps(with_identity({}, *survivor))),
    )
    conn.execute(
        "INSERT INTO patient_updates (patient_id, issuer, attrs, merged_into_id,"
        " merged_into_issuer) VALUES (?, ?, ?, ?, ?) ON CONFLICT (patient_id, issuer)"
        " DO UPDATE SET merged_into_id = excluded.merged_into_id,"
        " merged_into_issuer = excluded.merged_into_issuer",
        (*prior, dumps(with_identity({}, *prior)), *survivor),
    )
    conn.execute(
        "UPDATE patient_updates SET merged_into_id = ?, merged_into_issuer = ?"
        " WHERE merged_into_id = ? AND merged_into_issuer = ?",
        (*survivor, *prior),
    )
    old = conn.execute(
        "SELECT pk, attrs, n_studies, n_series, n_instances FROM patients"
        " WHERE patient_id = ? AND issuer = ?",
        prior,
    ).fetchone()
    if old is None:
        return 0
    pk = _survivor_pk(conn, survivor, json.loads(old[1]))
    conn.execute("UPDATE studies SET patient_pk = ? WHERE patient_pk = ?", (pk, old[0]))
    conn.execute(
        "UPDATE patients SET n_studies = n_studies + ?, n_series = n_series + ?,"
        " n_instances = n_instances + ? WHERE pk = ?",
        (old[2], old[3], old[4], pk),
    )
    conn.execute("DELETE FROM patients WHERE pk = ?", (old[0],))
    return int(old[2])


def _survivor_pk(conn: sqlite3.Connection, survivor: Key, prior_attrs: DicomJson) -> int:
    """The survivor's patient row, made from the prior one's attributes if it has none."""
    row = conn.execute(
        "SELECT pk FROM patients WHERE patient_id = ? AND issuer = ?", survivor
    ).fetchone()
    if row is not None:
        return int(row[0])
    known = conn.execute(
        "SELECT attrs FROM patient_updates WHERE patient_id = ? AND issuer = ?", survivor
    ).fetchone()
    attrs = with_identity({**prior_attrs, **json.loads(known[0])}, *survivor)
    created = conn.execute(
        "INSERT INTO patients (patient_id, issuer, attrs) VALUES (?, ?, '{}') RETURNING pk",
        survivor,
    ).fetchone()
    _set_attrs(conn, int(created[0]), attrs)
    return int(created[0])


def _set_attrs(conn: sqlite3.Connection, pk: int, attrs: DicomJson) -> None:
    """Store a patient's attributes and their indexed columns."""
    values: dict[str, Any] = {}
    for column in COLUMNS:
        if column.table != "patients":
            continue
        value = column_value(attrs, column)
        values[column.name] = value
        if column.kind == "pn":
            values[f"{column.name}_fold"] = None if value is None else fold(value)
        if value is None and column.kind != "number":
            conn.execute(
                "INSERT INTO irregular_columns (name) VALUES (?) ON CONFLICT DO NOTHING",
                (f"patients.{column.name}",),
            )
    values["attrs"] = dumps(attrs)
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(f"UPDATE patients SET {assignments} WHERE pk = ?", (*values.values(), pk))
