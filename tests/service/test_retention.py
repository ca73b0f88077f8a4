"""Retention and tiering runs over real SQLite and two folders (services/router/retention.py):
which studies each policy selects, a dry run that changes nothing, a move that switches
the catalog and keeps the old objects through the grace period, a failed copy and an
interrupted move that leave every study readable, deletions applied by the real index.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_blob_stores, open_catalog, open_event_bus
from micropacs.config import RetentionSettings
from micropacs.ports import (
    BlobStore,
    Catalog,
    EventBus,
    InstanceMove,
    InstanceRecord,
    StoredInstance,
)
from services.index.app import build as build_index
from services.router import retention_journal as journal
from services.router.retention import DAY, Retention
from services.router.retention_metrics import RetentionMetrics
from services.router.retention_policies import parse_policies
from services.router.retention_task import RetentionTask
from tests.contract.test_catalog import instance
from tests.service.conftest import service_settings

NOW = time.time()
"""Where the ages of the test studies count from."""
TIER = """
  - name: tier
    group: default
    action: move
    to: archive
    older_than_days: 30
"""
PURGE = """
  - name: purge
    group: archive
    action: delete
    older_than_days: 3650
"""
POLICIES = f"policies:{TIER}{PURGE}"
MOVES = f"policies:{TIER}"
DELETES = f"policies:{PURGE}"


def ago(days: float) -> str:
    return datetime.fromtimestamp(NOW - days * DAY, UTC).isoformat()


@dataclass
class Archive:
    """A catalog, a bus and two storage groups' folders under one test folder."""

    root: Path
    catalog: Catalog
    bus: EventBus
    blobs: BlobStore
    clock: list[float]
    registry: CollectorRegistry

    def retention(self, policies: str = POLICIES, **settings: object) -> Retention:
        own = RetentionSettings.model_validate({"deletion_wait": 0, **settings})
        return Retention(
            self.catalog,
            self.blobs,
            self.bus,
            parse_policies(policies),
            own,
            RetentionMetrics(self.registry),
            clock=lambda: self.clock[0],
        )

    async def store(self, records: list[InstanceRecord]) -> None:
        """Objects durable, then the records in the catalog (as the index writes them)."""
        kept = []
        for record in records:
            body = f"object {record.sop_instance_uid}".encode().ljust(record.size, b".")
            await self.blobs.put(record.object_key, io.BytesIO(body), len(body))
            kept.append(replace(record, sha256=hashlib.sha256(body).hexdigest()))
        await self.catalog.upsert_instances(kept)
        # The runs' clock goes on from here: the objects' write times (the file system's)
        # precede every run, as they do for real.
        self.clock[0] = max(self.clock[0], time.time())

    def files(self, group: str) -> set[str]:
        folder = self.root / ("archive" if group == "archive" else "objects")
        return {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(".")
        }

    async def keys(self, study_uid: str) -> list[str]:
        return sorted(loc.object_key for loc in await self.catalog.locate(study_uids=[study_uid]))

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def study(
    number: int, days_ago: float, group: str = "default", size: int = 300
) -> list[InstanceRecord]:
    """Two instances of study ``number`` received ``days_ago`` into ``group``."""
    records = []
    for n in (1, 2):
        record = instance(number, 1, n)
        records.append(
            replace(
                record,
                storage_group=group,
                object_key=record.object_key.replace("default/", f"{group}/", 1),
                received_at=ago(days_ago),
                size=size,
            )
        )
    return records


Scenario = Callable[["Archive"], Awaitable[None]]
InArchive = Callable[[Scenario], None]


@pytest.fixture
def in_archive(tmp_path: Path) -> InArchive:
    """Runs a scenario over a fresh archive."""

    def go(scenario: Scenario) -> None:
        async def main() -> None:
            blobs = await open_blob_stores(
                f"file://{tmp_path / 'objects'}",
                {"archive": f"file://{tmp_path / 'archive'}"},
                fsync=False,
            )
            catalog = await open_catalog(f"sqlite://{tmp_path / 'catalog.db'}")
            bus = await open_event_bus(f"sqlite://{tmp_path / 'events.db'}")
            try:
                await scenario(Archive(tmp_path, catalog, bus, blobs, [NOW], CollectorRegistry()))
            finally:
                await bus.close()
                await catalog.close()
                await blobs.close()

        asyncio.run(main())

    return go


def uid_of(records: list[InstanceRecord]) -> str:
    return records[0].study_instance_uid


def test_policies_select_by_age_and_a_dry_run_changes_nothing(in_archive: InArchive) -> None:
    async def scenario(archive: Archive) -> None:
        old, young, ancient = study(1, 400), study(2, 10), study(3, 4000, "archive")
        await archive.store([*old, *young, *ancient])
        before = (archive.files("default"), archive.files("archive"))

        report = await archive.retention().run("cli", dry_run=True)

        assert [
            (p.action, p.study_uid, p.group, p.to, p.instances, p.bytes) for p in report.planned
        ] == [
            ("move", uid_of(old), "default", "archive", 2, 600),
            ("delete", uid_of(ancient), "archive", None, 2, 600),
        ]
        assert (archive.files("default"), archive.files("archive")) == before
        assert await archive.keys(uid_of(old)) == sorted(r.object_key for r in old)
        assert report.moved == report.deleted == 0
        assert (
            archive.metric("micropacs_router_retention_runs_total", trigger="cli", outcome="ok")
            == 0
        )

    in_archive(scenario)


def test_a_move_switches_the_catalog_and_keeps_old_objects_through_the_grace_period(
    in_archive: InArchive,
) -> None:
    async def scenario(archive: Archive) -> None:
        old, young = study(1, 400), study(2, 10)
        await archive.store([*old, *young])
        retention = archive.retention(MOVES, grace_period=3600)
        outcomes: list[tuple[str, str]] = []

        report = await retention.run(
            "cli",
            progress=lambda planned, outcome, n, total: outcomes.append(
                (planned.study_uid, outcome)
            ),
        )

        assert outcomes == [(uid_of(old), "moved")]
        assert (report.moved, report.bytes_moved, report.failed, report.waiting) == (1, 600, 0, 1)
        new_keys = sorted(r.object_key.replace("default/", "archive/", 1) for r in old)
        assert await archive.keys(uid_of(old)) == new_keys
        assert set(new_keys) <= archive.files("archive")
        # The old objects stay for a retrieve that located them, and read the same.
        assert {r.object_key for r in old} <= archive.files("default")
        for record in old:
            moved = record.object_key.replace("default/", "archive/", 1)
            assert [c async for c in archive.blobs.read(moved)] == [
                c async for c in archive.blobs.read(record.object_key)
            ]
        assert await archive.keys(uid_of(young)) == sorted(r.object_key for r in young)
        assert (
            archive.metric(
                "micropacs_router_retention_studies_total", action="move", outcome="done"
            )
            == 1
        )
        assert archive.metric("micropacs_router_retention_bytes_total", action="move") == 600
        assert archive.metric("micropacs_router_retention_pending_bytes", group="default") == 600

        # Not yet: the grace period runs.
        start = archive.clock[0]
        archive.clock[0] = start + 3599
        assert await retention.clean() == (0, 1)
        archive.clock[0] = start + 3601
        assert await retention.clean() == (2, 0)
        assert not {r.object_key for r in old} & archive.files("default")
        assert not any("/moves/" in key for key in archive.files("default"))
        assert await archive.keys(uid_of(old)) == new_keys
        # A second run finds nothing more to move.
        assert (await retention.run("cli")).planned == []

    in_archive(scenario)


def test_free_space_moves_the_least_recently_received_until_the_target(
    in_archive: InArchive,
) -> None:
    policy = """
policies:
  - name: room
    group: default
    action: move
    to: archive
    free_below: 5000
    free_target: 6000
    quota: 10000
"""

    async def scenario(archive: Archive) -> None:
        # 9,000 of 10,000 bytes used: 5,000 more must go, least recently received first.
        studies = [study(1, 5, size=1500), study(2, 50, size=1500), study(3, 20, size=1500)]
        await archive.store([r for s in studies for r in s])
        retention = archive.retention(policy)
        assert await retention.short_of_space(retention.policies.policies[0]) == 5000

        planned = await retention.plan()
        assert [p.study_uid for p in planned] == [uid_of(studies[1]), uid_of(studies[2])]
        report = await retention.run("free_space")
        assert report.moved == 2
        assert archive.metric("micropacs_router_retention_free_bytes", group="default") == 7000
        # 7,000 free now, and 6,000 more waiting for the grace period: nothing to do.
        assert await retention.short_of_space(retention.policies.policies[0]) == 0
        assert (await retention.run("free_space")).planned == []

    in_archive(scenario)


def test_a_failed_copy_leaves_the_study_where_it_was(in_archive: InArchive) -> None:
    async def scenario(archive: Archive) -> None:
        broken, fine = study(1, 400), study(2, 300)
        await archive.store([*broken, *fine])
        await archive.blobs.delete(broken[1].object_key)  # lost by the disk

        report = await archive.retention(MOVES).run("cli")

        assert (report.moved, report.failed) == (1, 1)
        assert await archive.keys(uid_of(broken)) == sorted(r.object_key for r in broken)
        assert not any(uid_of(broken) in key for key in archive.files("archive"))
        entries = [e async for e in journal.entries(archive.blobs, ["default"])]
        assert [e.study_uid for e in entries] == [uid_of(fine)]  # in its grace period
        assert await archive.keys(uid_of(fine)) == sorted(
            r.object_key.replace("default/", "archive/", 1) for r in fine
        )
        assert (
            archive.metric(
                "micropacs_router_retention_studies_total", action="move", outcome="failed"
            )
            == 1
        )

    in_archive(scenario)


def test_interrupted_moves_are_finished_by_a_later_look(in_archive: InArchive) -> None:
    """What a kill -9 leaves: a journal entry whose copies the catalog never switched to,
    and one whose switch happened but was not noted."""

    async def scenario(archive: Archive) -> None:
        copying, switched = study(1, 400), study(2, 400)
        await archive.store([*copying, *switched])
        retention = archive.retention(MOVES, grace_period=60)

        def pairs(records: list[InstanceRecord]) -> list[tuple[str, str]]:
            return [
                (r.object_key, r.object_key.replace("default/", "archive/", 1)) for r in records
            ]

        for records in (copying, switched):
            entry = journal.new_entry(
                uid_of(records), "default", "archive", pairs(records), 600, archive.clock[0]
            )
            await journal.write(archive.blobs, entry)
            for old, new in pairs(records)[:1]:  # one copy made before the crash
                data = b"".join([c async for c in archive.blobs.read(old)])
                await archive.blobs.put(new, io.BytesIO(data), len(data))
        # The second study's move went as far as the catalog's switch.
        stored = await archive.catalog.stored_instances(uid_of(switched))
        assert await archive.catalog.move_instances(uid_of(switched), [to_archive(stored[0])]) == 1
        # Both studies readable at the keys their records name.
        for records in (copying, switched):
            for key in await archive.keys(uid_of(records)):
                assert await archive.blobs.stat(key) is not None

        start = archive.clock[0]
        archive.clock[0] = start + 3600  # past the grace period, not a day yet
        assert await retention.clean() == (0, 2)
        archive.clock[0] = start + DAY + 1
        assert await retention.clean() == (2, 0)
        # The unswitched copy went, the old object the catalog no longer names went, the
        # objects the records name stayed.
        for records in (copying, switched):
            keys = await archive.keys(uid_of(records))
            assert len(keys) == 2
            for key in keys:
                assert await archive.blobs.stat(key) is not None
        assert not any(uid_of(copying) in key for key in archive.files("archive"))
        assert copying[0].object_key in archive.files("default")
        assert switched[0].object_key not in archive.files("default")

    in_archive(scenario)


def to_archive(stored: StoredInstance) -> InstanceMove:
    new = stored.object_key.replace("default/", "archive/", 1)
    return InstanceMove(
        stored.sop_instance_uid, stored.object_key, stored.received_at, new, "archive"
    )


def test_a_delete_goes_through_the_deletion_events(in_archive: InArchive, tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        ancient, recent = study(1, 4000, "archive"), study(2, 100, "archive")
        # A study of which one instance came recently is not deleted, though its first is old.
        mixed = [study(3, 4000, "archive")[0], study(3, 1, "archive")[1]]
        await archive.store([*ancient, *recent, *mixed])
        index = build_index(
            service_settings(tmp_path),
            archive.bus,
            archive.catalog,
            CollectorRegistry(),
            blobs=archive.blobs,
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(task(stop)) for task in index.background()]
        try:
            retention = archive.retention(DELETES, deletion_wait=30)
            report = await retention.run("nightly")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert [p.study_uid for p in report.planned] == [uid_of(ancient)]
        assert (report.deleted, report.asked, report.bytes_deleted) == (1, 0, 600)
        assert await archive.keys(uid_of(ancient)) == []
        assert not any(uid_of(ancient) in key for key in archive.files("archive"))
        assert len(await archive.keys(uid_of(recent))) == 2
        assert len(await archive.keys(uid_of(mixed))) == 2

    in_archive(scenario)


ROOM = """
  - name: room
    group: default
    action: move
    to: archive
    free_below: 5000
    quota: 10000
"""


def test_two_policies_on_one_group_share_what_it_lacks(in_archive: InArchive) -> None:
    """The second policy of a group counts what the first already takes from it."""
    second = ROOM.replace("name: room", "name: more").replace("to: archive", "to: mr")

    async def scenario(archive: Archive) -> None:
        studies = [study(n, 100 - n, size=1500) for n in (1, 2, 3)]  # 9,000 of 10,000 bytes
        await archive.store([r for s in studies for r in s])
        planned = await archive.retention(f"policies:{ROOM}{second}").plan()
        assert [(p.policy, p.study_uid) for p in planned] == [
            ("room", uid_of(studies[0])),
            ("room", uid_of(studies[1])),
        ]

    in_archive(scenario)


def test_the_routers_task_runs_the_policies_of_a_group_short_of_space(
    in_archive: InArchive,
) -> None:
    async def scenario(archive: Archive) -> None:
        studies = [study(n, 100 - n, size=1500) for n in (1, 2, 3)]
        await archive.store([r for s in studies for r in s])
        retention = archive.retention(f"policies:{TIER}{ROOM}", grace_period=0)
        own = RetentionSettings(nightly_at="", check_interval=3600)
        task = RetentionTask(retention, own, clock=lambda: archive.clock[0])

        await task.look()  # TIER is by age alone: only ROOM runs, for what it lacks
        assert (
            archive.metric(
                "micropacs_router_retention_runs_total", trigger="free_space", outcome="ok"
            )
            == 1
        )
        groups = []
        for one in studies:
            stored = await archive.catalog.stored_instances(uid_of(one))
            groups.append({s.storage_group for s in stored})
        assert groups == [{"archive"}, {"archive"}, {"default"}]
        await task.look()  # enough room now: it only finishes moves (none waits)
        assert (
            archive.metric(
                "micropacs_router_retention_runs_total", trigger="free_space", outcome="ok"
            )
            == 1
        )

        # The task itself ends when told to, whatever it was waiting for.
        stop = asyncio.Event()
        running = asyncio.create_task(task.run(stop))
        stop.set()
        await asyncio.wait_for(running, 30)

    in_archive(scenario)
