"""RetrieveService: which instances a C-GET / C-MOVE (later WADO-RS) asks for, and their bytes.

A retrieve identifier names entities by their unique keys at its level
(PS3.4 C.4.2.2.1, C.4.3.2.1): PatientID, or lists of Study, Series or SOP
Instance UIDs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.errors import InvalidIdentifier, UnknownDestination
from micropacs.ports import BlobStore, Catalog, InstanceLocation, Level, Node
from services.qr.metrics import QrMetrics
from services.qr.query_service import (
    PATIENT_ID,
    SERIES_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
    check_uids,
    level_of,
)


class RetrieveService:
    """Locates instances and opens their stored bytes."""

    def __init__(
        self, catalog: Catalog, blobs: BlobStore, metrics: QrMetrics | None = None
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._metrics = metrics

    async def locate(self, identifier: DicomJson) -> list[InstanceLocation]:
        """The instances a retrieve identifier names, in series and instance order."""
        level = level_of(identifier)
        check_uids(identifier)

        def values(tag: str) -> list[str]:
            return [v.strip() for v in text_of(identifier.get(tag, {})) if v.strip()]

        unique = {
            Level.PATIENT: PATIENT_ID,
            Level.STUDY: STUDY_UID,
            Level.SERIES: SERIES_UID,
            Level.IMAGE: SOP_INSTANCE_UID,
        }[level]
        if not values(unique):
            raise InvalidIdentifier(
                f"a {level.value} level retrieve needs ({unique[:4]},{unique[4:]})"
            )
        return await self._catalog.locate(
            patient_ids=values(PATIENT_ID) if level is Level.PATIENT else (),
            study_uids=values(STUDY_UID),
            series_uids=values(SERIES_UID) if level in (Level.SERIES, Level.IMAGE) else (),
            sop_instance_uids=values(SOP_INSTANCE_UID) if level is Level.IMAGE else (),
        )

    async def read(self, location: InstanceLocation) -> AsyncIterator[bytes]:
        """The stored bytes of ``location``, in chunks."""
        started = time.perf_counter()
        first = True
        async for chunk in self._blobs.read(location.object_key):
            if first and self._metrics is not None:
                self._metrics.object_store_seconds.observe(time.perf_counter() - started)
            first = False
            yield chunk

    @asynccontextmanager
    async def local_path(self, location: InstanceLocation) -> AsyncIterator[Path]:
        """A local file with the stored bytes of ``location``."""
        started = time.perf_counter()
        async with self._blobs.local_path(location.object_key) as path:
            if self._metrics is not None:
                self._metrics.object_store_seconds.observe(time.perf_counter() - started)
            yield path

    async def destination(self, ae_title: str) -> Node:
        """The registered node a C-MOVE sends to (PS3.4 C.4.2.1.4.1)."""
        wanted = ae_title.strip()
        for node in await self._catalog.nodes():
            if node.ae_title == wanted:
                return node
        raise UnknownDestination(f"move destination {wanted!r} is not a registered node")
