"""Builds the index service from settings and adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import Catalog, EventBus
from micropacs.service import (
    BackgroundTask,
    HandlerBinding,
)
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics


@dataclass
class IndexApp:
    """The index service: the instance.stored consumer."""

    indexer: Indexer
    checks: Mapping[str, Check]

    def add_contexts(self, ae: AE) -> None:
        """None: the index answers no DICOM."""

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """None: the index answers no DICOM."""
        return []

    def web_routes(self) -> list[BaseRoute]:
        """None beside health, readiness and metrics."""
        return []

    def background(self) -> list[BackgroundTask]:
        """The consumer."""
        return [self.indexer.run]


def build(
    settings: Settings, bus: EventBus, catalog: Catalog, registry: CollectorRegistry
) -> IndexApp:
    """The index service over the given adapters."""
    indexer = Indexer(bus, catalog, IndexMetrics(registry), settings.index)
    return IndexApp(indexer=indexer, checks={"event_bus": bus.check, "catalog": catalog.check})
