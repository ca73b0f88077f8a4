"""The index's audit consumer: audit.recorded events into the catalog's audit trail.

At-least-once like the other consumers (:mod:`services.index.consuming`): a batch is
stored with :meth:`~micropacs.ports.Catalog.put_audit`, idempotent by event id, then
committed; an undecodable event goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from micropacs.config import IndexSettings
from micropacs.errors import MicropacsError, is_retryable
from micropacs.events import AUDIT, AuditRecorded
from micropacs.ports import AuditRecord, Catalog, EventBus, Record
from services.index.consuming import Consuming
from services.index.metrics import IndexMetrics


class AuditIndexer:
    """Consumes the audit topic and stores its records in the catalog."""

    def __init__(
        self, bus: EventBus, catalog: Catalog, metrics: IndexMetrics, settings: IndexSettings
    ) -> None:
        self._catalog = catalog
        self._consuming = Consuming(bus, AUDIT, metrics, settings)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing after every stored batch."""
        await self._consuming.run(self.process, stop)

    async def process(self, records: Sequence[Record], stop: asyncio.Event | None = None) -> None:
        """Store a batch of audit records (dead-lettering what cannot be stored)."""
        good: list[tuple[Record, AuditRecord]] = []
        for record in records:
            try:
                good.append((record, AuditRecorded.from_bytes(record.value)))
            except MicropacsError as exc:
                await self._consuming.dead_letter(record, str(exc))
        if not good:
            return
        try:
            await self._put([entry for _, entry in good], stop)
        except MicropacsError as exc:
            if is_retryable(exc):
                raise
            for record, entry in good:  # one bad record must not block its batch
                try:
                    await self._put([entry], stop)
                except MicropacsError as error:
                    if is_retryable(error):
                        raise
                    await self._consuming.dead_letter(record, str(error))

    async def _put(self, entries: list[AuditRecord], stop: asyncio.Event | None) -> None:
        await self._consuming.retrying(
            lambda: self._catalog.put_audit(entries), stop, "audit write"
        )
