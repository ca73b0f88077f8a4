"""The index consumer: instance.stored events into the catalog.

At-least-once (ARCHITECTURE.md, rule 2): a batch is written, then its offsets
are committed; a crash in between redelivers the batch, and the catalog's
idempotent upsert makes the second write a no-op. Retryable failures are
retried with backoff for as long as they last (nothing is skipped while the
catalog is down); an event that cannot be processed goes to the dead-letter
topic and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence

from micropacs.config import IndexSettings
from micropacs.errors import MicropacsError, is_retryable
from micropacs.events import DEAD_LETTER, INSTANCE_STORED, DeadLetter, InstanceStored
from micropacs.ports import Catalog, Consumer, EventBus, InstanceRecord, Record
from services.index.metrics import IndexMetrics

log = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
"""Seconds between two readings of the consumer lag."""


class Indexer:
    """Consumes instance.stored and upserts the catalog, batch by batch."""

    def __init__(
        self, bus: EventBus, catalog: Catalog, metrics: IndexMetrics, settings: IndexSettings
    ) -> None:
        self._bus = bus
        self._catalog = catalog
        self._metrics = metrics
        self._settings = settings
        self._lag_checked = -LAG_INTERVAL

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing after every written batch."""
        consumer = await self._bus.consumer(INSTANCE_STORED, self._settings.group)
        log.info("index consumer started", extra={"group": self._settings.group})
        try:
            while not stop.is_set():
                records = await consumer.poll(
                    self._settings.batch_size, self._settings.poll_interval
                )
                if records:
                    await self.process(records, stop)
                    await consumer.commit(records)
                await self._observe_lag(consumer)
        finally:
            await consumer.close()

    async def _observe_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._lag_checked < LAG_INTERVAL:
            return
        self._lag_checked = now
        try:
            lags = await consumer.lag()
        except MicropacsError as exc:
            log.warning("consumer lag unknown", extra={"reason": str(exc)})
            return
        self._metrics.lag.clear()  # partitions move between members on a rebalance
        for partition, events in lags.items():
            self._metrics.lag.labels(partition=str(partition)).set(events)

    async def process(self, records: Sequence[Record], stop: asyncio.Event | None = None) -> None:
        """Write a batch of records to the catalog (dead-lettering the undecodable)."""
        started = time.perf_counter()
        good: list[tuple[Record, InstanceRecord]] = []
        for record in records:
            try:
                # An event is the catalog's record as it is (InstanceStored is an InstanceRecord).
                good.append((record, InstanceStored.from_bytes(record.value)))
            except MicropacsError as exc:
                await self._dead_letter(record, str(exc))
        if good:
            try:
                await self._write([r for _, r in good], stop)
            except MicropacsError:
                # One bad record must not block its batch: write them one by one.
                for record, instance in good:
                    try:
                        await self._write([instance], stop)
                    except MicropacsError as exc:
                        await self._dead_letter(record, str(exc))
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _write(self, instances: list[InstanceRecord], stop: asyncio.Event | None) -> None:
        delay = 0.1
        while True:
            try:
                await self._catalog.upsert_instances(instances)
                self._metrics.upserts.inc(len(instances))
                return
            except MicropacsError as exc:
                if not is_retryable(exc) or (stop is not None and stop.is_set()):
                    raise
                self._metrics.retries.inc()
                log.warning("catalog write failed, retrying", extra={"reason": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter(self, record: Record, reason: str) -> None:
        letter = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            consumer_group=self._settings.group,
            reason=reason,
            payload_base64=base64.b64encode(record.value).decode(),
        )
        await self._bus.publish(DEAD_LETTER, record.key, letter.to_bytes())
        self._metrics.dead_letters.inc()
        log.error(
            "event dead-lettered",
            extra={"topic": record.topic, "offset": record.offset, "reason": reason},
        )
