"""Builds the index service from settings and adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.atna.exporter import AtnaExporter, exporter_from_settings
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import BlobStore, Catalog, EventBus, Worklist
from micropacs.service import (
    BackgroundTask,
    HandlerBinding,
)
from services.index.audit import AuditIndexer
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from services.index.rejected import RejectedDeletion
from services.index.workflow import WorkflowApplier


@dataclass
class IndexApp:
    """The index service: the instance.stored consumer, and the workflow consumers when it
    has a worklist store."""

    indexer: Indexer
    checks: Mapping[str, Check]
    workflow: WorkflowApplier | None = None
    audit: AuditIndexer | None = None
    atna: AtnaExporter | None = None
    """The export to the Audit Record Repository, when one is configured."""
    rejected: RejectedDeletion | None = None
    """The deletion of rejected instances (IOCM), when a delay is set."""

    def add_contexts(self, ae: AE) -> None:
        """None: the index answers no DICOM."""

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """None: the index answers no DICOM."""
        return []

    def web_routes(self) -> list[BaseRoute]:
        """None beside health, readiness and metrics."""
        return []

    def background(self) -> list[BackgroundTask]:
        """The consumers."""
        workflow = self.workflow.tasks() if self.workflow is not None else []
        audit = [self.audit.run] if self.audit is not None else []
        atna = [self.atna.run] if self.atna is not None else []
        rejected = [self.rejected.run] if self.rejected is not None else []
        return [self.indexer.run, *workflow, *audit, *atna, *rejected]


def build(
    settings: Settings,
    bus: EventBus,
    catalog: Catalog,
    registry: CollectorRegistry,
    worklist: Worklist | None = None,
    blobs: BlobStore | None = None,
) -> IndexApp:
    """The index service over the given adapters; with ``worklist``, it also applies the
    worklist, MPPS and patient events to it; with ``blobs``, deletions remove the objects
    too."""
    metrics = IndexMetrics(registry)
    indexer = Indexer(bus, catalog, metrics, settings.index, blobs)
    checks: dict[str, Check] = {"event_bus": bus.check, "catalog": catalog.check}
    workflow = None
    if worklist is not None:
        workflow = WorkflowApplier(bus, worklist, metrics, settings.index, catalog)
        checks["worklist"] = worklist.check
    audit = AuditIndexer(bus, catalog, metrics, settings.index)
    atna = exporter_from_settings(settings, bus, registry)
    rejected = RejectedDeletion(bus, catalog, settings.iocm, registry)
    return IndexApp(
        indexer=indexer,
        checks=checks,
        workflow=workflow,
        audit=audit,
        atna=atna,
        rejected=rejected if rejected.enabled else None,
    )
