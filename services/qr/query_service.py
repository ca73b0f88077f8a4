"""QueryService: C-FIND and QIDO-RS over the core's query of the catalog
(:mod:`micropacs.query`, PS3.4 C.4.1), timed by level on the qr service's metrics, its
reads waiting at the read barrier as the qr service's."""

from __future__ import annotations

import time

from micropacs.config import QuerySettings
from micropacs.dicom.json_model import DicomJson
from micropacs.ports import Catalog
from micropacs.query import QueryService as CoreQuery
from micropacs.query import at_image_level, check_uids, level_of, metadata_of
from micropacs.read_barrier import ReadBarrier
from services.qr.metrics import QrMetrics
from services.qr.read_scope import READER

__all__ = ["QueryService", "check_uids", "level_of"]


class QueryService:
    """Answers queries at every level from the catalog, observing each one's latency."""

    def __init__(
        self,
        catalog: Catalog,
        metrics: QrMetrics,
        settings: QuerySettings,
        ae_title: str,
        barrier: ReadBarrier | None = None,
    ) -> None:
        self._query = CoreQuery(catalog, settings, ae_title, barrier, reader=READER)
        self._metrics = metrics

    async def find(
        self,
        identifier: DicomJson,
        *,
        limit: int = 0,
        offset: int = 0,
        include_all: bool = False,
        study_root: bool = False,
    ) -> list[DicomJson]:
        """Every match of ``identifier`` (:meth:`micropacs.query.QueryService.find`)."""
        started = time.perf_counter()
        level = level_of(identifier)
        responses = await self._query.find(
            identifier, limit=limit, offset=offset, include_all=include_all, study_root=study_root
        )
        self._metrics.query_seconds.labels(level=level.value).observe(time.perf_counter() - started)
        return responses

    async def metadata(self, identifier: DicomJson) -> list[DicomJson]:
        """Every attribute the catalog holds of each instance under one study, series or
        instance (WADO-RS metadata, PS3.18 10.4.1.1.2); NotFound when there is none."""
        return metadata_of(await self.find(at_image_level(identifier), include_all=True))
