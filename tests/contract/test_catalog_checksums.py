"""Catalog contract: the SHA-256 recorded at store time is kept and located (both backends).

Storage Commitment (PS3.4 J) commits an instance only while its object still hashes to
the digest ``instance.stored`` carried; the catalog is where that digest is kept, so
:meth:`~micropacs.ports.Catalog.locate` must give back exactly what was upserted, the
latest store of an instance winning, and "" for instances indexed before checksums.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import replace

from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
from micropacs.adapters.factory import _local_path, open_catalog
from micropacs.ports import Catalog
from tests.contract.conftest import Runner
from tests.contract.test_catalog import instance

FIRST = hashlib.sha256(b"first bytes").hexdigest()
SECOND = hashlib.sha256(b"second bytes").hexdigest()


def test_locate_gives_the_recorded_checksum(catalog: Catalog, run: Runner) -> None:
    kept = replace(instance(1, 1, 1), sha256=FIRST)
    none = instance(1, 1, 2)
    run(catalog.upsert_instances([kept, none]))

    found = {
        loc.sop_instance_uid: loc.sha256
        for loc in run(catalog.locate(study_uids=[kept.study_instance_uid]))
    }

    assert found == {kept.sop_instance_uid: FIRST, none.sop_instance_uid: ""}


def test_a_store_again_replaces_the_checksum(catalog: Catalog, run: Runner) -> None:
    record = replace(instance(1, 1, 1), sha256=FIRST)
    run(catalog.upsert_instances([record]))
    run(catalog.upsert_instances([replace(record, sha256=SECOND, size=2000)]))
    run(catalog.upsert_instances([replace(record, sha256=SECOND, size=2000)]))  # redelivered

    (location,) = run(catalog.locate(sop_instance_uids=[record.sop_instance_uid]))

    assert (location.sha256, location.size) == (SECOND, 2000)
    assert run(catalog.counts()).instances == 1


def test_the_latest_of_one_batch_wins(catalog: Catalog, run: Runner) -> None:
    record = instance(2, 1, 1)
    run(catalog.upsert_instances([replace(record, sha256=FIRST), replace(record, sha256=SECOND)]))

    (location,) = run(catalog.locate(sop_instance_uids=[record.sop_instance_uid]))

    assert location.sha256 == SECOND


def test_sqlite_migrates_a_catalog_without_checksums(catalog_url: str, run: Runner) -> None:
    old = instance(1, 1, 1)
    first = run(open_catalog(catalog_url))
    run(first.upsert_instances([replace(old, sha256=FIRST)]))
    run(first.close())
    path = _local_path(catalog_url)
    with closing(sqlite3.connect(path)) as conn:  # the tables as version 6 had them
        conn.execute("ALTER TABLE instances DROP COLUMN sha256")
        conn.execute("PRAGMA user_version = 6")
        conn.commit()

    migrated = run(open_catalog(catalog_url))
    new = replace(instance(1, 1, 2), sha256=SECOND)
    run(migrated.upsert_instances([new]))
    found = {
        loc.sop_instance_uid: loc.sha256
        for loc in run(migrated.locate(study_uids=[old.study_instance_uid]))
    }
    run(migrated.close())

    assert found == {old.sop_instance_uid: "", new.sop_instance_uid: SECOND}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
