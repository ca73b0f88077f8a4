"""Writing batches of instances into the SQLite catalog (private).

Counters and sets of the computed attributes (PS3.4 C.3.4) change by what
each batch adds or moves; nothing counts a whole study per insert.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from micropacs.adapters import _sqlite_catalog_patients as _patients
from micropacs.adapters._patients import filed_under
from micropacs.adapters._sqlite_catalog_schema import (
    COLUMNS,
    INDEXED,
    column_value,
    dumps,
)
from micropacs.dicom import levels, tags
from micropacs.dicom.json_model import DicomJson, element, text_of
from micropacs.dicom.levels import Level
from micropacs.dicom.matching import fold
from micropacs.dicom.uids import require_uid
from micropacs.errors import InvalidInput
from micropacs.ports import InstanceRecord

INSTANCE_NUMBER = INDEXED[tags.INSTANCE_NUMBER]


@dataclass
class Prepared:
    """One instance record with its header split by level, ready to write."""

    record: InstanceRecord
    by_level: dict[Level, DicomJson]

    @property
    def patient_key(self) -> tuple[str, str]:
        """The patient's identity: PatientID and IssuerOfPatientID."""
        return (self.record.patient_id, self.record.issuer_of_patient_id)


def prepare(record: InstanceRecord) -> Prepared:
    """Validate a record's UIDs and split its header by level (CPU only, no SQL)."""
    for name in ("sop_instance_uid", "sop_class_uid", "series_instance_uid", "study_instance_uid"):
        require_uid(getattr(record, name), name)
    if not isinstance(record.header, dict):
        raise InvalidInput("an instance record's header must be DICOM JSON (an object)")
    split = levels.split_by_level(record.header)
    by_level = {level: dict(split.get(level, {})) for level in Level}
    # The identity of each level comes from the record, whatever the header says.
    by_level[Level.PATIENT][tags.PATIENT_ID] = element("LO", record.patient_id)
    if record.issuer_of_patient_id or tags.ISSUER_OF_PATIENT_ID in by_level[Level.PATIENT]:
        by_level[Level.PATIENT][tags.ISSUER_OF_PATIENT_ID] = element(
            "LO", record.issuer_of_patient_id
        )
    by_level[Level.STUDY][tags.STUDY_INSTANCE_UID] = element("UI", record.study_instance_uid)
    by_level[Level.SERIES][tags.SERIES_INSTANCE_UID] = element("UI", record.series_instance_uid)
    by_level[Level.IMAGE][tags.SOP_INSTANCE_UID] = element("UI", record.sop_instance_uid)
    by_level[Level.IMAGE][tags.SOP_CLASS_UID] = element("UI", record.sop_class_uid)
    return Prepared(record=record, by_level=by_level)


@dataclass
class Entity:
    """A patient, study or series of a batch: its latest record and its merged attributes."""

    latest: Prepared
    attrs: DicomJson


def group(batch: list[Prepared], level: Level, key: Callable[[Prepared], Any]) -> dict[Any, Entity]:
    """The batch's entities at ``level``; later records' attributes override earlier ones."""
    entities: dict[Any, Entity] = {}
    for item in batch:
        found = entities.get(key(item))
        if found is None:
            entities[key(item)] = Entity(latest=item, attrs=dict(item.by_level[level]))
        else:
            found.latest = item
            found.attrs.update(item.by_level[level])
    return entities


class Deltas:
    """Counter changes of one batch, applied together at its end."""

    def __init__(self) -> None:
        self.patients: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.studies: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.series: defaultdict[str, int] = defaultdict(int)

    def patient(self, pk: int, studies: int = 0, series: int = 0, instances: int = 0) -> None:
        """Add to a patient's numbers of related studies, series and instances."""
        counts = self.patients[pk]
        counts[0] += studies
        counts[1] += series
        counts[2] += instances

    def study(self, uid: str, series: int = 0, instances: int = 0) -> None:
        """Add to a study's numbers of related series and instances."""
        counts = self.studies[uid]
        counts[0] += series
        counts[1] += instances


class Batch:
    """Writes one batch of instances inside the writer's open transaction.

    Upper levels keep their stored attributes and take the batch's on top
    (the latest record wins attribute by attribute), so an object with few
    study attributes, such as a presentation state, does not erase the
    others. A study whose PatientID changed moves to that patient, a series
    whose study changed moves with its instances; counters follow, and
    entities left empty are removed.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.deltas = Deltas()
        self.owner: dict[str, int] = {}  # study UID -> patient pk, after this batch
        self.modalities_dirty: set[str] = set()
        self.sop_classes_dirty: set[str] = set()
        self.sop_classes_added: defaultdict[str, set[str]] = defaultdict(set)
        self.irregular: set[str] = set()

    def write(self, batch: list[Prepared]) -> None:
        """Write every record of ``batch`` (one record per SOP Instance UID)."""
        batch = self._filed(batch)
        patients = group(batch, Level.PATIENT, lambda item: item.patient_key)
        studies = group(batch, Level.STUDY, lambda item: item.record.study_instance_uid)
        series = group(batch, Level.SERIES, lambda item: item.record.series_instance_uid)
        patient_pks = {key: self._patient(key, entity) for key, entity in patients.items()}
        self._studies(studies, patient_pks)
        self._series(series)
        # An instance belongs to the study its series is written under (the latest record's).
        series_study = {uid: e.latest.record.study_instance_uid for uid, e in series.items()}
        self._instances(batch, series_study)
        self._apply()
        self._remove_empty(studies, patient_pks.values())
        self._recompute()
        for name in self.irregular:
            self.conn.execute(
                "INSERT INTO irregular_columns (name) VALUES (?) ON CONFLICT DO NOTHING", (name,)
            )

    def remove(self, instances: list[tuple[str, str, str]]) -> None:
        """Remove these instances (SOP Instance, Series and Study UIDs), their counters
        following and the entities they leave empty with them."""
        self.conn.executemany(
            "DELETE FROM instances WHERE sop_instance_uid = ?", [(uid,) for uid, _, _ in instances]
        )
        studies = set()
        for _, series, study in instances:
            self._count_instance(series, study, -1)
            studies.add(study)
        self.sop_classes_dirty.update(studies)
        self._apply()
        self._remove_empty(studies, ())
        self._recompute()

    def _filed(self, batch: list[Prepared]) -> list[Prepared]:
        """The batch with each record of a patient the RIS changed filed as it says
        (its demographics, or the survivor of a merge)."""
        changed = _patients.resolve(self.conn, {item.patient_key for item in batch})
        if not changed:
            return batch
        filed = []
        for item in batch:
            found = changed.get(item.patient_key)
            if found is None:
                filed.append(item)
                continue
            (patient_id, issuer), attrs, merged = found
            record = filed_under(item.record, patient_id, issuer, attrs, merged=merged)
            filed.append(prepare(record))
        return filed

    def _columns(self, table: str, attrs: DicomJson) -> dict[str, Any]:
        """The indexed columns of ``table`` for these attributes (PN ones with their fold)."""
        values: dict[str, Any] = {}
        for column in COLUMNS:
            if column.table != table:
                continue
            value = column_value(attrs, column)
            values[column.name] = value
            if column.kind == "pn":
                values[f"{column.name}_fold"] = None if value is None else fold(value)
            if value is None and column.kind != "number":
                self.irregular.add(f"{table}.{column.name}")
        return values

    def _upsert(self, table: str, key: str, uid: Any, values: dict[str, Any], exists: bool) -> None:
        names = list(values)
        if exists:
            assignments = ", ".join(f"{name} = ?" for name in names)
            sql = f"UPDATE {table} SET {assignments} WHERE {key} = ?"
        else:
            marks = ", ".join("?" * (len(names) + 1))
            sql = f"INSERT INTO {table} ({', '.join(names)}, {key}) VALUES ({marks})"
        self.conn.execute(sql, (*values.values(), uid))

    def _existing(self, sql: str, keys: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        rows = self.conn.execute(sql, (json.dumps(list(keys)),)).fetchall()
        return {row[0]: tuple(row[1:]) for row in rows}

    def _patient(self, key: tuple[str, str], entity: Entity) -> int:
        row = self.conn.execute(
            "SELECT pk, attrs FROM patients WHERE patient_id = ? AND issuer = ?", key
        ).fetchone()
        attrs = {**json.loads(row[1]), **entity.attrs} if row else entity.attrs
        values = {**self._columns("patients", attrs), "attrs": dumps(attrs)}
        if row is not None:
            self._upsert("patients", "pk", row[0], values, exists=True)
            return int(row[0])
        values["patient_id"], values["issuer"] = key
        names = list(values)
        found = self.conn.execute(
            f"INSERT INTO patients ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            " RETURNING pk",
            tuple(values.values()),
        ).fetchone()
        return int(found[0])

    def _studies(self, studies: dict[str, Entity], patient_pks: dict[tuple[str, str], int]) -> None:
        existing = self._existing(
            "SELECT study_uid, patient_pk, n_series, n_instances, attrs FROM studies"
            " WHERE study_uid IN (SELECT value FROM json_each(?))",
            studies,
        )
        for uid, entity in studies.items():
            pk = patient_pks[entity.latest.patient_key]
            self.owner[uid] = pk
            old = existing.get(uid)
            attrs = {**json.loads(old[3]), **entity.attrs} if old else entity.attrs
            values = {"patient_pk": pk, **self._columns("studies", attrs), "attrs": dumps(attrs)}
            self._upsert("studies", "study_uid", uid, values, exists=old is not None)
            if old is None:
                self.deltas.patient(pk, studies=1)
                continue
            old_pk, n_series, n_instances, _ = old
            if old_pk != pk:  # the study now belongs to another patient (ID corrected)
                self.deltas.patient(old_pk, -1, -n_series, -n_instances)
                self.deltas.patient(pk, 1, n_series, n_instances)

    def _owner(self, study_uid: str) -> int:
        if study_uid not in self.owner:
            row = self.conn.execute(
                "SELECT patient_pk FROM studies WHERE study_uid = ?", (study_uid,)
            ).fetchone()
            self.owner[study_uid] = int(row[0])
        return self.owner[study_uid]

    def _series(self, series: dict[str, Entity]) -> None:
        existing = self._existing(
            "SELECT series_uid, study_uid, modality, n_instances, attrs FROM series"
            " WHERE series_uid IN (SELECT value FROM json_each(?))",
            series,
        )
        for uid, entity in series.items():
            study = entity.latest.record.study_instance_uid
            old = existing.get(uid)
            attrs = {**json.loads(old[3]), **entity.attrs} if old else entity.attrs
            columns = self._columns("series", attrs)
            values = {"study_uid": study, **columns, "attrs": dumps(attrs)}
            self._upsert("series", "series_uid", uid, values, exists=old is not None)
            if old is None:
                self.deltas.study(study, series=1)
                self.deltas.patient(self._owner(study), series=1)
                self.modalities_dirty.add(study)
                continue
            old_study, old_modality, n_instances, _ = old
            if old_study != study:  # moved to another study: take its instances along
                self.deltas.study(old_study, -1, -n_instances)
                self.deltas.patient(self._owner(old_study), series=-1, instances=-n_instances)
                self.deltas.study(study, 1, n_instances)
                self.deltas.patient(self._owner(study), series=1, instances=n_instances)
                self.conn.execute(
                    "UPDATE instances SET study_uid = ? WHERE series_uid = ?", (study, uid)
                )
                self.modalities_dirty.update((old_study, study))
                self.sop_classes_dirty.update((old_study, study))
            elif old_modality != columns["modality"]:
                self.modalities_dirty.add(study)

    def _instances(self, batch: list[Prepared], series_study: dict[str, str]) -> None:
        existing = self._existing(
            "SELECT sop_instance_uid, series_uid, study_uid, sop_class_uid FROM instances"
            " WHERE sop_instance_uid IN (SELECT value FROM json_each(?))",
            (item.record.sop_instance_uid for item in batch),
        )
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for item in batch:
            record = item.record
            series = record.series_instance_uid
            study = series_study[series]
            values = (
                series,
                study,
                record.sop_class_uid,
                column_value(item.by_level[Level.IMAGE], INSTANCE_NUMBER),
                record.object_key,
                record.transfer_syntax_uid,
                record.size,
                record.storage_group,
                record.received_at,
                zlib.compress(dumps(item.by_level[Level.IMAGE]).encode(), 1),
                record.original_transfer_syntax_uid,
                record.sha256,
                record.sop_instance_uid,
            )
            old = existing.get(record.sop_instance_uid)
            if old is None:
                inserts.append(values)
                self._count_instance(series, study, +1)
                self.sop_classes_added[study].add(record.sop_class_uid)
                continue
            updates.append(values)
            old_series, old_study, old_class = old
            if old_series != series or old_study != study:
                self._count_instance(old_series, old_study, -1)
                self._count_instance(series, study, +1)
                self.sop_classes_dirty.update((old_study, study))
            elif old_class != record.sop_class_uid:
                self.sop_classes_dirty.add(study)
        self.conn.executemany(
            "INSERT INTO instances (series_uid, study_uid, sop_class_uid, instance_number,"
            " object_key, transfer_syntax_uid, size, storage_group, received_at, attrs,"
            " original_transfer_syntax_uid, sha256, sop_instance_uid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            inserts,
        )
        self.conn.executemany(
            "UPDATE instances SET series_uid = ?, study_uid = ?, sop_class_uid = ?,"
            " instance_number = ?, object_key = ?, transfer_syntax_uid = ?, size = ?,"
            " storage_group = ?, received_at = ?, attrs = ?, original_transfer_syntax_uid = ?,"
            " sha256 = ? WHERE sop_instance_uid = ?",
            updates,
        )

    def _count_instance(self, series: str, study: str, step: int) -> None:
        self.deltas.series[series] += step
        self.deltas.study(study, instances=step)
        self.deltas.patient(self._owner(study), instances=step)

    def _apply(self) -> None:
        self.conn.executemany(
            "UPDATE series SET n_instances = n_instances + ? WHERE series_uid = ?",
            [(n, uid) for uid, n in self.deltas.series.items() if n],
        )
        self.conn.executemany(
            "UPDATE studies SET n_series = n_series + ?, n_instances = n_instances + ?"
            " WHERE study_uid = ?",
            [(s, i, uid) for uid, (s, i) in self.deltas.studies.items() if s or i],
        )
        self.conn.executemany(
            "UPDATE patients SET n_studies = n_studies + ?, n_series = n_series + ?,"
            " n_instances = n_instances + ? WHERE pk = ?",
            [(st, se, i, pk) for pk, (st, se, i) in self.deltas.patients.items() if st or se or i],
        )

    def _remove_empty(self, studies: Iterable[str], patients: Iterable[int]) -> None:
        """Drop series, studies and patients whose last instance moved elsewhere."""
        for uid in self.deltas.series:
            row = self.conn.execute(
                "DELETE FROM series WHERE series_uid = ? AND n_instances <= 0 RETURNING study_uid",
                (uid,),
            ).fetchone()
            if row is not None:
                study = row[0]
                self.conn.execute(
                    "UPDATE studies SET n_series = n_series - 1 WHERE study_uid = ?", (study,)
                )
                self.conn.execute(
                    "UPDATE patients SET n_series = n_series - 1 WHERE pk = ?",
                    (self._owner(study),),
                )
                self.modalities_dirty.add(study)
        for uid in {*self.deltas.studies, *studies}:
            row = self.conn.execute(
                "DELETE FROM studies WHERE study_uid = ? AND n_instances <= 0 RETURNING patient_pk",
                (uid,),
            ).fetchone()
            if row is not None:
                self.conn.execute(
                    "UPDATE patients SET n_studies = n_studies - 1 WHERE pk = ?", (row[0],)
                )
                self.modalities_dirty.discard(uid)
                self.sop_classes_dirty.discard(uid)
                self.sop_classes_added.pop(uid, None)
        for pk in {*self.deltas.patients, *patients}:
            self.conn.execute("DELETE FROM patients WHERE pk = ? AND n_instances <= 0", (pk,))

    def _recompute(self) -> None:
        for study in self.modalities_dirty:
            found = {
                row[0]
                for row in self.conn.execute(
                    "SELECT DISTINCT modality FROM series WHERE study_uid = ?", (study,)
                )
            }
            if None in found:
                modalities = self._irregular_modalities(study)
            else:
                modalities = sorted(m for m in found if m)
            self.conn.execute(
                "UPDATE studies SET modalities = ? WHERE study_uid = ?",
                (json.dumps(modalities), study),
            )
        for study in self.sop_classes_dirty:
            rows = self.conn.execute(
                "SELECT DISTINCT sop_class_uid FROM instances WHERE study_uid = ?", (study,)
            ).fetchall()
            self.conn.execute(
                "UPDATE studies SET sop_classes = ? WHERE study_uid = ?",
                (json.dumps(sorted(row[0] for row in rows)), study),
            )
        for study, added in self.sop_classes_added.items():
            if study in self.sop_classes_dirty:
                continue
            row = self.conn.execute(
                "SELECT sop_classes FROM studies WHERE study_uid = ?", (study,)
            ).fetchone()
            known = set(json.loads(row[0]))
            if not added <= known:
                self.conn.execute(
                    "UPDATE studies SET sop_classes = ? WHERE study_uid = ?",
                    (json.dumps(sorted(known | added)), study),
                )

    def _irregular_modalities(self, study: str) -> list[str]:
        """Modalities of a study some of whose series hold several Modality values."""
        found: set[str] = set()
        for (attrs,) in self.conn.execute("SELECT attrs FROM series WHERE study_uid = ?", (study,)):
            found.update(
                t.strip() for t in text_of(json.loads(attrs).get(tags.MODALITY), skip_blank=True)
            )
        return sorted(found)
