"""Builds the ingest service from settings and adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dicomweb import multipart
from micropacs.http import Check
from micropacs.ports import BlobStore, EventBus
from micropacs.routing.rules import RuleSet, load_rules
from micropacs.service import (
    BackgroundTask,
    HandlerBinding,
)
from services.ingest import dimse
from services.ingest.metrics import IngestMetrics
from services.ingest.store_service import StoreService
from services.ingest.stow import Stow


@dataclass
class IngestApp:
    """The ingest service: C-ECHO, C-STORE and STOW-RS over a StoreService."""

    store: StoreService
    checks: Mapping[str, Check]
    called_ae: str
    stow_limits: multipart.Limits | None = None

    def add_contexts(self, ae: AE) -> None:
        """Accept verification and every storage SOP class."""
        dimse.add_contexts(ae)

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """C-ECHO and C-STORE, calling into ``bridge``'s loop."""
        return dimse.handlers(self.store, bridge)

    def web_routes(self) -> list[BaseRoute]:
        """STOW-RS."""
        return Stow(self.store, self.called_ae, self.stow_limits).routes()

    def background(self) -> list[BackgroundTask]:
        """None: ingest answers requests only."""
        return []


def build(
    settings: Settings,
    blobs: BlobStore,
    bus: EventBus,
    registry: CollectorRegistry,
    rules: RuleSet | None = None,
) -> IngestApp:
    """The ingest service over the given adapters, coercing what ``rules`` or those of the
    routing rules file say (``MICROPACS_ROUTER__RULES_FILE``, the router's file: one file
    says what is changed on the way in and where it goes on). An invalid file raises
    :class:`~micropacs.errors.InvalidSettings` here, at start."""
    if rules is None:
        path = settings.router.rules_file
        rules = load_rules(path) if path is not None else RuleSet()
    store = StoreService(
        blobs,
        bus,
        IngestMetrics(registry),
        site=settings.site,
        storage_group=settings.storage.group,
        compression=settings.storage.compression,
        default_issuer=settings.issuer_of_patient_id,
        rules=rules,
    )
    return IngestApp(
        store=store,
        checks={"blob_store": blobs.check, "event_bus": bus.check},
        called_ae=settings.dicom.ae_title,
        stow_limits=multipart.Limits(
            settings.http.stow_max_bytes, settings.http.stow_max_parts, settings.http.stow_timeout
        ),
    )
