"""The index's part in IOCM (docs/iocm.md): rejection notes stored are applied to the catalog.

A rejection note is an instance like any other: it is written with its batch first, then
the instances it names are rejected (:meth:`~micropacs.ports.Catalog.reject_instances`),
from the header its ``instance.stored`` event carries, with no read of the object. Both
are idempotent, so a batch redelivered after a crash between the two applies the note
again and leaves the catalog as once. A note whose references cannot be read rejects
nothing: it stays stored, and a log line says why (never a UID).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from micropacs.iocm import MalformedRejectionNote, rejection_note
from micropacs.ports import Catalog, InstanceRecord, Rejection
from services.index.consuming import Consuming
from services.index.metrics import IndexMetrics

log = logging.getLogger(__name__)


class RejectionApplier:
    """Finds the rejection notes of a written batch and rejects what they name."""

    def __init__(self, catalog: Catalog, consuming: Consuming, metrics: IndexMetrics) -> None:
        self._catalog = catalog
        self._consuming = consuming
        self._metrics = metrics

    async def apply(self, written: Sequence[InstanceRecord], stop: asyncio.Event | None) -> None:
        """Reject the instances named by the rejection notes among ``written``."""
        rejections: list[Rejection] = []
        for record in written:
            try:
                note = rejection_note(record)
            except MalformedRejectionNote as exc:
                self._metrics.rejection_notes.labels(outcome="malformed").inc()
                log.warning(
                    "rejection note stored but ignored: %s",
                    exc,
                    extra={"calling_ae": getattr(record, "calling_ae", "")},
                )
                continue
            if note is None:
                continue
            self._metrics.rejection_notes.labels(outcome="applied").inc()
            rejections.extend(note.rejections)
        if not rejections:
            return
        catalog = self._catalog
        hidden = await self._consuming.retrying(
            lambda: catalog.reject_instances(rejections), stop, "catalog rejection"
        )
        self._metrics.rejected_instances.inc(hidden)
        log.info(
            "rejection notes applied",
            extra={"rejected": len(rejections), "hidden_now": hidden},
        )
