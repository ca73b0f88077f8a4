"""Deleting rejected instances (IOCM, docs/iocm.md) once their rejection is old enough.

Every ``MICROPACS_IOCM__DELETE_INTERVAL`` seconds, the instances rejected more than
``MICROPACS_IOCM__DELETE_REJECTED_AFTER`` seconds ago that the catalog still holds are
asked for deletion, one ``instance.deleted`` event each, through
:func:`micropacs.deletion.request_deletion` like any other deletion; the index removes
them from the catalog and their objects from the BlobStore. Nothing is kept in memory:
what is due is read from the catalog at each look, so a restart, or a second index
process, only asks again for what is not deleted yet, and a deletion asked twice is
applied once. The index runs it (with the deletion events it applies), so it needs no
process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from micropacs.config import IocmSettings
from micropacs.deletion import DeletionTarget, request_deletion
from micropacs.errors import MicropacsError, NotFound, is_retryable
from micropacs.iocm import REJECTION_TITLES, normal_time
from micropacs.ports import Catalog, EventBus

log = logging.getLogger(__name__)

ACTOR = "iocm"
"""Who the deletions of rejected instances are asked by, in their events."""


class RejectedDeletion:
    """Asks for the deletion of rejected instances that are due; :meth:`run` is a
    background task (which only waits when ``delete_rejected_after`` is 0)."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Catalog,
        settings: IocmSettings,
        registry: CollectorRegistry,
    ) -> None:
        self._bus = bus
        self._catalog = catalog
        self._settings = settings
        self.requested = Counter(
            "micropacs_index_rejected_deletions_total",
            "Rejected instances (IOCM) asked for deletion once their delay was over.",
            registry=registry,
        )
        self.failures = Counter(
            "micropacs_index_rejected_deletion_failures_total",
            "Looks for rejected instances due that failed (a store down), tried again later.",
            registry=registry,
        )

    @property
    def enabled(self) -> bool:
        """Whether rejected instances are deleted at all."""
        return self._settings.delete_rejected_after > 0

    async def run(self, stop: asyncio.Event) -> None:
        """Look for rejected instances due every interval until ``stop`` is set."""
        while not stop.is_set():
            if self.enabled:
                try:
                    await self.delete_due()
                except MicropacsError as exc:
                    if not is_retryable(exc):
                        raise
                    self.failures.inc()
                    log.warning("deleting rejected instances failed", extra={"reason": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.delete_interval)

    async def delete_due(self, now: datetime | None = None) -> int:
        """Ask for the deletion of the rejected instances due at ``now`` (at most
        ``delete_batch``); how many were asked."""
        moment = now or datetime.now(UTC)
        until = normal_time(moment - timedelta(seconds=self._settings.delete_rejected_after))
        due = await self._catalog.rejected_instances(until, self._settings.delete_batch)
        asked = 0
        for rejected in due:
            target = DeletionTarget(
                rejected.study_instance_uid,
                rejected.series_instance_uid,
                rejected.sop_instance_uid,
            )
            title = REJECTION_TITLES.get(rejected.reason, rejected.reason)
            try:
                await request_deletion(
                    self._bus,
                    self._catalog,
                    target,
                    ACTOR,
                    f"IOCM: {title} ({rejected.reason}), rejected at {rejected.rejected_at}",
                )
            except NotFound:
                continue  # deleted meanwhile
            asked += 1
        if asked:
            self.requested.inc(asked)
            log.info("rejected instances asked for deletion", extra={"instances": asked})
        return asked
