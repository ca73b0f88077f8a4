"""Builds the index service from settings and adapters (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import Catalog, EventBus
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics


@dataclass
class IndexApp:
    """The index service: the instance.stored consumer."""

    indexer: Indexer
    checks: dict[str, Check]


def build(
    settings: Settings, bus: EventBus, catalog: Catalog, registry: CollectorRegistry
) -> IndexApp:
    """The index service over the given adapters."""
    indexer = Indexer(bus, catalog, IndexMetrics(registry), settings.index)
    return IndexApp(indexer=indexer, checks={"event_bus": bus.check, "catalog": catalog.check})
