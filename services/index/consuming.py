"""What every consumer of the index does alike: poll, write, commit, retry, dead-letter.

At-least-once (ARCHITECTURE.md, rule 2): a batch is handed to the consumer's
``process``, then its offsets are committed; a crash in between redelivers
the batch, and idempotent writes make the second pass a no-op. A retryable
failure is retried with bounded backoff for as long as it lasts (nothing is
skipped while a store is down); an event that cannot be processed goes to
the dead-letter topic and the consumer moves on. A retryable failure is never
dead-lettered: stopped while it lasts, the consumer leaves the batch
uncommitted (a read barrier must not pass over events the catalog lacks).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from micropacs.config import IndexSettings
from micropacs.errors import MicropacsError, is_retryable
from micropacs.events import DEAD_LETTER, DeadLetter
from micropacs.ports import Consumer, EventBus, Record
from services.index.metrics import IndexMetrics

T = TypeVar("T")

log = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
"""Seconds between two readings of the consumer lag."""

Process = Callable[[Sequence[Record], asyncio.Event], Awaitable[None]]
"""Writes a batch of records (dead-lettering what it cannot write); then it is committed."""


class Consuming:
    """One topic's consumer loop in the index's group, with its retries and dead letters."""

    def __init__(
        self, bus: EventBus, topic: str, metrics: IndexMetrics, settings: IndexSettings
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._metrics = metrics
        self._settings = settings
        self._lag_checked = -LAG_INTERVAL
        self._lagging: set[str] = set()

    async def run(self, process: Process, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing after every processed batch."""
        consumer = await self._bus.consumer(self._topic, self._settings.group)
        log.info(
            "index consumer started", extra={"topic": self._topic, "group": self._settings.group}
        )
        try:
            while not stop.is_set():
                records = await consumer.poll(
                    self._settings.batch_size, self._settings.poll_interval
                )
                if records:
                    try:
                        await process(records, stop)
                    except MicropacsError as exc:
                        if not (stop.is_set() and is_retryable(exc)):
                            raise
                        # Stopped while a store is down: uncommitted, the batch is
                        # delivered again to whoever consumes next (never dead-lettered).
                        log.info(
                            "index consumer stopped before its batch was written",
                            extra={"topic": self._topic, "reason": str(exc)},
                        )
                        return
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
            log.warning("consumer lag unknown", extra={"topic": self._topic, "reason": str(exc)})
            return
        # Partitions move between members on a rebalance: drop those this one lost.
        partitions = {str(partition) for partition in lags}
        for gone in self._lagging - partitions:
            self._metrics.lag.remove(self._topic, gone)
        self._lagging = partitions
        for partition, events in lags.items():
            self._metrics.lag.labels(topic=self._topic, partition=str(partition)).set(events)

    async def retrying(
        self, write: Callable[[], Awaitable[T]], stop: asyncio.Event | None, what: str
    ) -> T:
        """``write()``, again with backoff while it fails with a retryable error (until
        ``stop``); a non-retryable error is raised at once."""
        delay = 0.1
        while True:
            try:
                return await write()
            except MicropacsError as exc:
                if not is_retryable(exc) or (stop is not None and stop.is_set()):
                    raise
                self._metrics.retries.inc()
                log.warning("write failed, retrying", extra={"write": what, "reason": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def dead_letter(self, record: Record, reason: str) -> None:
        """Park ``record`` on the dead-letter topic, with where it came from and why."""
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
