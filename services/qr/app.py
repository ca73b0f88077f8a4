"""Builds the qr service from settings and adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import BlobStore, Catalog
from micropacs.read_barrier import ReadBarrier
from micropacs.service import (
    BackgroundTask,
    HandlerBinding,
)
from services.qr import dicomweb, dimse
from services.qr.metrics import QrMetrics
from services.qr.query_service import QueryService
from services.qr.retrieve_service import RetrieveService


@dataclass
class QrApp:
    """The qr service: C-FIND, C-GET, C-MOVE, QIDO-RS, WADO-RS and WADO-URI."""

    query: QueryService
    retrieve: RetrieveService
    metrics: QrMetrics
    checks: Mapping[str, Check]

    def add_contexts(self, ae: AE) -> None:
        """Accept the Patient Root and Study Root information models."""
        dimse.add_contexts(ae)

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """C-FIND, C-GET and C-MOVE, calling into ``bridge``'s loop."""
        return dimse.handlers(self.query, self.retrieve, bridge, self.metrics)

    def web_routes(self) -> list[BaseRoute]:
        """QIDO-RS, WADO-RS and WADO-URI."""
        return dicomweb.routes(self.query, self.retrieve)

    def background(self) -> list[BackgroundTask]:
        """None: qr answers requests only."""
        return []


def build(
    settings: Settings,
    catalog: Catalog,
    blobs: BlobStore,
    registry: CollectorRegistry,
    barrier: ReadBarrier | None,
) -> QrApp:
    """The qr service over the given adapters; its reads wait at ``barrier`` (None: they
    answer from the catalog as it is, for a catalog nothing indexes into)."""
    metrics = QrMetrics(registry)
    ae_title = settings.dicom.ae_title
    return QrApp(
        query=QueryService(catalog, metrics, settings.query, ae_title, barrier),
        retrieve=RetrieveService(catalog, blobs, metrics, barrier),
        metrics=metrics,
        checks={"catalog": catalog.check, "blob_store": blobs.check},
    )
