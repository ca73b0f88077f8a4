"""The index consumer: the study topic's events into the catalog.

At-least-once (ARCHITECTURE.md, rule 2): a batch is written, then its offsets
are committed; a crash in between redelivers the batch, and the catalog's
idempotent upsert makes the second write a no-op. Retryable failures are
retried with backoff for as long as they last (nothing is skipped while the
catalog is down); an event that cannot be processed goes to the dead-letter
topic and the consumer moves on (:mod:`services.index.consuming`).

The topic carries a study's stores (``instance.stored``) and its deletions
(:mod:`services.index.deletion`) in the order they were published: the stores
between two deletions are written as one batch, each deletion after the stores
before it and before those after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from micropacs.config import IndexSettings
from micropacs.errors import MicropacsError, is_retryable
from micropacs.events import INSTANCE_STORED, InstanceStored, decode_study_event
from micropacs.ports import BlobStore, Catalog, EventBus, InstanceRecord, Record
from services.index.consuming import Consuming
from services.index.deletion import DeletionApplier
from services.index.metrics import IndexMetrics
from services.index.rejection import RejectionApplier


class Indexer:
    """Consumes the study topic and upserts (or removes from) the catalog, batch by batch."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Catalog,
        metrics: IndexMetrics,
        settings: IndexSettings,
        blobs: BlobStore | None = None,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._consuming = Consuming(bus, INSTANCE_STORED, metrics, settings)
        self._deletions = DeletionApplier(catalog, blobs, self._consuming, metrics)
        self._rejections = RejectionApplier(catalog, self._consuming, metrics)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing after every written batch."""
        await self._consuming.run(self.process, stop)

    async def process(self, records: Sequence[Record], stop: asyncio.Event | None = None) -> None:
        """Write a batch of records to the catalog in order (dead-lettering the undecodable)."""
        started = time.perf_counter()
        stores: list[tuple[Record, InstanceRecord]] = []
        for record in records:
            try:
                event = decode_study_event(record.value)
            except MicropacsError as exc:
                await self._consuming.dead_letter(record, str(exc))
                continue
            # An InstanceStored is the catalog's record as it is (an InstanceRecord).
            if isinstance(event, InstanceStored):
                stores.append((record, event))
                continue
            await self._stores(stores, stop)
            stores = []
            try:
                await self._deletions.apply(event, stop)
            except MicropacsError as exc:
                if is_retryable(exc):  # stopped while a store is down: not applied
                    raise
                await self._consuming.dead_letter(record, str(exc))
        await self._stores(stores, stop)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _stores(
        self, good: list[tuple[Record, InstanceRecord]], stop: asyncio.Event | None
    ) -> None:
        """Write a run of stores at once, one by one if one of them fails."""
        if not good:
            return
        try:
            await self._write([r for _, r in good], stop)
        except MicropacsError as exc:
            if is_retryable(exc):  # stopped while the catalog is down: not written
                raise
            # One bad record must not block its batch: write them one by one.
            for record, instance in good:
                try:
                    await self._write([instance], stop)
                except MicropacsError as error:
                    if is_retryable(error):
                        raise
                    await self._consuming.dead_letter(record, str(error))

    async def _write(self, instances: list[InstanceRecord], stop: asyncio.Event | None) -> None:
        await self._consuming.retrying(
            lambda: self._catalog.upsert_instances(instances), stop, "catalog write"
        )
        self._metrics.upserts.inc(len(instances))
        await self._rejections.apply(instances, stop)  # IOCM notes, once they are stored
