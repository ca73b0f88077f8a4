"""The index's deletions: study.deleted, series.deleted and instance.deleted applied.

Idempotent (ARCHITECTURE.md, rule 2), and never against a newer store: the catalog
removes only the target's instances received no later than the request
(:meth:`~micropacs.ports.Catalog.remove_instances`), so a deletion redelivered
after the same UIDs were stored again leaves the new store alone. Then the objects
go from the BlobStore: those whose records were removed, and those under the
event's ``object_prefixes`` (a redelivery after a crash between the catalog write
and the objects' removal finds them there), but never one a live record of the
catalog still points at, nor one written after the request: the same UIDs stored again
while the deletion waited (a replay of the study's events from before the deletion
overwrites the catalog's newer record for a moment, and only the object's own write
time tells). The consumer commits the offset only afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial

from micropacs.events import DeletionEvent
from micropacs.ports import BlobStore, Catalog
from services.index.consuming import Consuming
from services.index.metrics import IndexMetrics

log = logging.getLogger(__name__)


class DeletionApplier:
    """Applies deletion events to the catalog, then to the BlobStore."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore | None,
        consuming: Consuming,
        metrics: IndexMetrics,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._consuming = consuming
        self._metrics = metrics

    async def apply(self, event: DeletionEvent, stop: asyncio.Event | None) -> None:
        """Remove the event's target from the catalog, then its objects."""
        catalog = self._catalog
        removed = await self._consuming.retrying(
            lambda: catalog.remove_instances(
                event.study_instance_uid,
                event.series_instance_uid,
                event.sop_instance_uid,
                event.requested_at,
            ),
            stop,
            "catalog deletion",
        )
        self._metrics.deletions.labels(type=event.type).inc()
        self._metrics.deleted_instances.inc(len(removed))
        blobs = self._blobs
        if blobs is None:
            log.warning("no BlobStore: deleted instances' objects are left", extra=_ids(event))
            return
        objects = await self._consuming.retrying(
            lambda: self._objects(blobs, event, removed), stop, "object listing"
        )
        for key in sorted(objects):
            await self._consuming.retrying(partial(blobs.delete, key), stop, "object deletion")
        self._metrics.deleted_objects.inc(len(objects))
        log.info(
            "deletion applied",
            extra={**_ids(event), "instances": len(removed), "objects": len(objects)},
        )

    async def _objects(
        self, blobs: BlobStore, event: DeletionEvent, removed: list[str]
    ) -> set[str]:
        """The objects to delete: the removed records' and those found under the event's
        prefixes, less those the catalog still has a live record of."""
        found = set(removed)
        for prefix in event.object_prefixes:
            if event.sop_instance_uid:
                if await blobs.stat(prefix) is not None:
                    found.add(prefix)
                continue
            async for key in blobs.iterate(prefix):
                found.add(key)
        if not found:
            return found
        live = await self._catalog.locate(study_uids=[event.study_instance_uid])
        found -= {location.object_key for location in live}
        requested = datetime.fromisoformat(event.requested_at)
        for key in sorted(found):
            info = await blobs.stat(key)
            if info is not None and written_after(info.modified, requested):
                found.discard(key)  # stored again since: its event follows this one
        return found


def written_after(modified: datetime | None, requested: datetime) -> bool:
    """Whether an object last written at ``modified`` may have been written after the
    deletion was requested. S3 gives whole seconds (cut, not rounded): an object of the
    request's own second may be newer, and is kept."""
    if modified is None:
        return False
    if requested.tzinfo is None:
        requested = requested.replace(tzinfo=UTC)
    if modified.microsecond == 0:
        return modified >= requested.replace(microsecond=0)
    return modified > requested


def _ids(event: DeletionEvent) -> dict[str, str]:
    """What a log line may say of a deletion: its id and type, never a UID."""
    return {"deletion_id": event.deletion_id, "type": event.type}
