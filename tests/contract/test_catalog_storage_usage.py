"""Catalog contract: instances and bytes per storage group (``Catalog.storage_usage``).

The figures follow every write: stores, a redelivered store (idempotent), a re-store of
an instance with another size or in another group, and deletions; a group left empty is
not listed. On SQLite they come from an aggregate kept by triggers, which a catalog of
schema 5 gets, summed once, when it is migrated.
"""

from __future__ import annotations

from dataclasses import replace

from micropacs.ports import Catalog, InstanceRecord, StorageUsage
from tests.contract.conftest import Runner
from tests.contract.test_catalog import instance

SCHEMA_5_INSTANCE_COLUMNS = {
    "sop_instance_uid",
    "series_uid",
    "study_uid",
    "sop_class_uid",
    "instance_number",
    "object_key",
    "transfer_syntax_uid",
    "size",
    "storage_group",
    "received_at",
    "attrs",
    "original_transfer_syntax_uid",
}


def in_group(record: InstanceRecord, group: str, size: int | None = None) -> InstanceRecord:
    return replace(record, storage_group=group, size=record.size if size is None else size)


def test_storage_usage_follows_stores_and_deletions(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.storage_usage()) == []
    ct = [instance(1, 1, 1), instance(1, 1, 2)]  # sizes 1001 and 1002
    mr = in_group(instance(2, 1, 1, modality="MR"), "mr", 5000)
    run(catalog.upsert_instances([*ct, mr]))
    expected = [StorageUsage("default", 2, 2003), StorageUsage("mr", 1, 5000)]
    assert run(catalog.storage_usage()) == expected

    run(catalog.upsert_instances([ct[0], mr]))  # delivered again: as once
    assert run(catalog.storage_usage()) == expected

    # Stored again, compressed at rest: the new size replaces the old.
    run(catalog.upsert_instances([replace(ct[1], size=400)]))
    assert run(catalog.storage_usage()) == [
        StorageUsage("default", 2, 1401),
        StorageUsage("mr", 1, 5000),
    ]
    # Stored again into another group: it moves.
    run(catalog.upsert_instances([in_group(ct[0], "mr")]))
    assert run(catalog.storage_usage()) == [
        StorageUsage("default", 1, 400),
        StorageUsage("mr", 2, 6001),
    ]

    run(catalog.remove_instances(mr.study_instance_uid))
    assert run(catalog.storage_usage()) == [
        StorageUsage("default", 1, 400),
        StorageUsage("mr", 1, 1001),
    ]
    run(catalog.remove_instances(ct[0].study_instance_uid))
    assert run(catalog.storage_usage()) == []


def test_storage_usage_of_many_instances_in_one_batch(catalog: Catalog, run: Runner) -> None:
    records = [
        in_group(instance(3, series, number), f"g{series % 3}", 10 * number)
        for series in range(1, 7)
        for number in range(1, 21)
    ]
    run(catalog.upsert_instances(records))
    expected = []
    for group in ("g0", "g1", "g2"):
        mine = [r for r in records if r.storage_group == group]
        expected.append(StorageUsage(group, len(mine), sum(r.size for r in mine)))
    assert run(catalog.storage_usage()) == expected


def test_sqlite_a_schema_5_catalog_gets_its_storage_usage_summed(
    catalog_url: str, run: Runner
) -> None:
    import sqlite3
    from contextlib import closing

    from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
    from micropacs.adapters.factory import _local_path, open_catalog

    first = run(open_catalog(catalog_url))
    mr = in_group(instance(2, 1, 1, modality="MR"), "mr", 5000)
    run(first.upsert_instances([instance(1, 1, 1), instance(1, 1, 2), mr]))
    run(first.close())
    path = _local_path(catalog_url)
    with closing(sqlite3.connect(path)) as conn:  # the tables of schema 5
        for trigger in ("storage_usage_added", "storage_usage_removed", "storage_usage_replaced"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE storage_usage")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
        for later in sorted(columns - SCHEMA_5_INSTANCE_COLUMNS):
            conn.execute(f"ALTER TABLE instances DROP COLUMN {later}")
        conn.execute("PRAGMA user_version = 5")
        conn.commit()

    migrated = run(open_catalog(catalog_url))
    assert run(migrated.storage_usage()) == [
        StorageUsage("default", 2, 2003),
        StorageUsage("mr", 1, 5000),
    ]
    run(migrated.upsert_instances([instance(1, 1, 3)]))
    assert run(migrated.storage_usage())[0] == StorageUsage("default", 3, 3006)
    run(migrated.close())
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
