"""Deletions through the index built with ``build(...)`` over real SQLite and files: applied
once however often delivered, never against a newer store, objects gone from the BlobStore
(services/index/deletion.py, micropacs/deletion.py)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.deletion import DeletionTarget, request_deletion
from micropacs.errors import InvalidInput, InvalidUid, NotFound
from micropacs.events import DEAD_LETTER, INSTANCE_STORED, InstanceStored
from micropacs.ports import BlobStore, Catalog, CatalogCounts, EventBus, InstanceRecord, Record
from services.index.app import IndexApp, build
from tests.contract.test_catalog import instance, uid
from tests.service.conftest import service_settings

Scenario = Callable[["Archive"], Awaitable[None]]


class Archive:
    """A bus, catalog and BlobStore under one folder, and the index over them."""

    def __init__(self, bus: EventBus, catalog: Catalog, blobs: BlobStore, index: IndexApp) -> None:
        self.bus = bus
        self.catalog = catalog
        self.blobs = blobs
        self.index = index
        self._seen = 0

    async def store(self, record: InstanceRecord, body: bytes = b"DICM") -> None:
        """What ingest does: the object durable, then its event acknowledged."""
        await self.blobs.put(record.object_key, io.BytesIO(body), len(body))
        event = InstanceStored(**asdict(record), calling_ae="CT1", called_ae="PACS", site="")
        await self.bus.publish(INSTANCE_STORED, event.key, event.to_bytes())

    async def records(self, topic: str = INSTANCE_STORED) -> list[Record]:
        """Every event of ``topic`` so far, in order."""
        consumer = await self.bus.consumer(topic, f"reader-{self._seen}")
        self._seen += 1
        try:
            found: list[Record] = []
            while batch := await consumer.poll(1000, 0.2):
                found.extend(batch)
            return found
        finally:
            await consumer.close()

    async def deliver(self) -> None:
        """Hand every event of the topic so far to the index, as a redelivery from zero."""
        await self.index.indexer.process(await self.records())

    async def objects(self) -> list[str]:
        return sorted([key async for key in self.blobs.iterate()])


def run_scenario(tmp_path: Path, scenario: Scenario) -> None:
    async def go() -> None:
        settings = service_settings(tmp_path)
        bus = await open_event_bus(f"sqlite://{tmp_path / 'events.db'}")
        catalog = await open_catalog(f"sqlite://{tmp_path / 'catalog.db'}")
        blobs = await open_blob_store(f"file://{tmp_path / 'objects'}", fsync=False)
        try:
            index = build(settings, bus, catalog, CollectorRegistry(), blobs=blobs)
            await scenario(Archive(bus, catalog, blobs, index))
        finally:
            await blobs.close()
            await catalog.close()
            await bus.close()

    asyncio.run(go())


STUDY = [instance(1, 1, 1), instance(1, 1, 2), instance(1, 2, 1)]
OTHER = instance(2, 1, 1)
EMPTY = CatalogCounts(patients=0, studies=0, series=0, instances=0)


def test_a_study_deletion_delivered_three_times_is_applied_once(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        for record in [*STUDY, OTHER]:
            await archive.store(record)
        await archive.deliver()
        receipt = await request_deletion(
            archive.bus, archive.catalog, DeletionTarget(uid(1)), "cli", "test"
        )
        assert receipt.instances == 3
        for _ in range(3):
            await archive.deliver()
            assert await archive.catalog.counts() == CatalogCounts(1, 1, 1, 1)
            assert await archive.objects() == [OTHER.object_key]
        assert await archive.records(DEAD_LETTER) == []

    run_scenario(tmp_path, scenario)


def test_series_and_instance_deletions(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        for record in STUDY:
            await archive.store(record)
        await archive.deliver()
        one = DeletionTarget(uid(1), uid(1, 1), uid(1, 1, 2))
        assert (await request_deletion(archive.bus, archive.catalog, one, "cli")).instances == 1
        await archive.deliver()
        assert await archive.objects() == sorted([STUDY[0].object_key, STUDY[2].object_key])
        series = DeletionTarget(uid(1), uid(1, 2))
        assert (await request_deletion(archive.bus, archive.catalog, series, "cli")).instances == 1
        await archive.deliver()
        await archive.deliver()
        assert await archive.objects() == [STUDY[0].object_key]
        assert await archive.catalog.counts() == CatalogCounts(1, 1, 1, 1)

    run_scenario(tmp_path, scenario)


def test_a_redelivered_deletion_leaves_a_later_store_of_the_same_uids(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        for record in STUDY:
            await archive.store(record)
        await archive.deliver()
        await request_deletion(archive.bus, archive.catalog, DeletionTarget(uid(1)), "cli")
        await archive.deliver()
        assert await archive.catalog.counts() == EMPTY
        assert await archive.objects() == []

        again = replace(STUDY[0], received_at=datetime.now(UTC).isoformat())
        await archive.store(again, b"DICM again")
        await archive.deliver()  # the store, the deletion and the store again, in order
        await archive.deliver()
        (located,) = await archive.catalog.locate(study_uids=[uid(1)])
        assert located.sop_instance_uid == again.sop_instance_uid
        assert await archive.objects() == [again.object_key]
        assert await archive.catalog.counts() == CatalogCounts(1, 1, 1, 1)

    run_scenario(tmp_path, scenario)


def test_objects_left_by_a_crash_after_the_catalog_write_go_on_redelivery(
    tmp_path: Path,
) -> None:
    async def scenario(archive: Archive) -> None:
        for record in STUDY:
            await archive.store(record)
        await archive.deliver()
        await request_deletion(archive.bus, archive.catalog, DeletionTarget(uid(1)), "cli")
        # The catalog write of the deletion, without its objects' removal (a crash between).
        await archive.catalog.remove_instances(uid(1), received_until=datetime.now(UTC).isoformat())
        assert len(await archive.objects()) == 3
        await archive.deliver()
        assert await archive.objects() == []

    run_scenario(tmp_path, scenario)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (DeletionTarget(uid(9)), NotFound),
        (DeletionTarget(uid(1), uid(1, 9)), NotFound),
        (DeletionTarget(uid(1), uid(1, 1), uid(1, 1, 9)), NotFound),
        (DeletionTarget("1.2.x"), InvalidUid),
        (DeletionTarget("../../etc"), InvalidUid),
        (DeletionTarget(uid(1), "1." + "2" * 70), InvalidUid),
        (DeletionTarget(uid(1), uid(1, 1), "1.02"), InvalidUid),
        (DeletionTarget(uid(1), "", uid(1, 1, 1)), InvalidInput),
        (DeletionTarget(""), InvalidUid),
    ],
)
def test_a_bad_or_unknown_target_is_refused_and_nothing_published(
    tmp_path: Path, target: DeletionTarget, error: type[Exception]
) -> None:
    async def scenario(archive: Archive) -> None:
        await archive.store(STUDY[0])
        await archive.deliver()
        with pytest.raises(error):
            await request_deletion(archive.bus, archive.catalog, target, "cli")
        assert len(await archive.records()) == 1
        assert await archive.catalog.counts() == CatalogCounts(1, 1, 1, 1)

    run_scenario(tmp_path, scenario)


def test_a_deletion_without_actor_or_with_a_huge_reason_is_refused(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        await archive.store(STUDY[0])
        await archive.deliver()
        with pytest.raises(InvalidInput):
            await request_deletion(archive.bus, archive.catalog, DeletionTarget(uid(1)), " ")
        with pytest.raises(InvalidInput):
            await request_deletion(
                archive.bus, archive.catalog, DeletionTarget(uid(1)), "cli", "x" * 5000
            )
        assert len(await archive.records()) == 1

    run_scenario(tmp_path, scenario)


def test_a_malformed_deletion_event_is_dead_lettered(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        await archive.store(STUDY[0])
        payload = b'{"type":"study.deleted","version":1,"study_instance_uid":"1.2"}'
        await archive.bus.publish(INSTANCE_STORED, "1.2", payload)
        await archive.store(OTHER)
        await archive.deliver()
        assert len(await archive.records(DEAD_LETTER)) == 1
        assert await archive.catalog.counts() == CatalogCounts(1, 2, 2, 2)

    run_scenario(tmp_path, scenario)


def test_a_deletion_event_with_a_bad_time_is_dead_lettered(tmp_path: Path) -> None:
    async def scenario(archive: Archive) -> None:
        await archive.store(STUDY[0])
        payload = (
            b'{"type":"study.deleted","version":1,"deletion_id":"d","study_instance_uid":"'
            + uid(1).encode()
            + b'","actor":"cli","requested_at":"yesterday"}'
        )
        await archive.bus.publish(INSTANCE_STORED, uid(1), payload)
        await archive.deliver()
        assert len(await archive.records(DEAD_LETTER)) == 1
        assert await archive.catalog.counts() == CatalogCounts(1, 1, 1, 1)

    run_scenario(tmp_path, scenario)
