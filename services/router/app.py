"""Builds the router service from settings and adapters (reads only the rules file)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dimse.scu import Associations
from micropacs.http import Check
from micropacs.ports import BlobStore, Catalog, EventBus, Worklist
from micropacs.read_barrier import ReadBarrier
from micropacs.routing.rules import RuleSet, load_rules
from micropacs.service import BackgroundTask, HandlerBinding
from services.router.api import RouterApi
from services.router.commitment import StorageCommitment, build_commitment
from services.router.ian import Notifications, notifications_from_settings
from services.router.metrics import RouterMetrics
from services.router.nodes import NodeCache
from services.router.retention_task import RetentionTask, retention_from_settings
from services.router.routing import Router
from services.router.sending import Dispatcher


@dataclass
class RouterApp:
    """The router: the consumer that fills the queues, the senders that empty them, and
    the queues' HTTP routes; the Instance Availability Notifications when some node gets them."""

    rules: RuleSet
    router: Router
    dispatcher: Dispatcher
    api: RouterApi
    checks: Mapping[str, Check]
    ian: Notifications | None = None
    retention: RetentionTask | None = None
    commitment: StorageCommitment | None = None
    """The Storage Commitment SCP (docs/storage-commitment.md)."""

    def add_contexts(self, ae: AE) -> None:
        """Storage Commitment's (the router otherwise opens associations)."""
        if self.commitment is not None:
            self.commitment.add_contexts(ae)

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """Storage Commitment's N-ACTION."""
        return self.commitment.dimse_handlers(bridge) if self.commitment is not None else []

    def web_routes(self) -> list[BaseRoute]:
        """The queues' routes under ``/router/queues``."""
        return self.api.routes()

    def background(self) -> list[BackgroundTask]:
        """The consumer and the senders, and the notifications' consumers and timer."""
        ian = self.ian.background() if self.ian is not None else []
        retention = [self.retention.run] if self.retention is not None else []
        commitment = self.commitment.background() if self.commitment is not None else []
        return [self.router.run, self.dispatcher.run, *ian, *retention, *commitment]


def build(
    settings: Settings,
    bus: EventBus,
    catalog: Catalog,
    blobs: BlobStore,
    registry: CollectorRegistry,
    rules: RuleSet | None = None,
    worklist: Worklist | None = None,
    barrier: ReadBarrier | None = None,
) -> RouterApp:
    """The router over the given adapters, with ``rules`` or those of the rules file
    (``MICROPACS_ROUTER__RULES_FILE``; none: nothing new is forwarded). An invalid file
    raises :class:`~micropacs.errors.InvalidSettings` here, at start. With ``worklist``, a
    completed MPPS is read there for its notification (``MICROPACS_IAN__DESTINATIONS``).
    Storage Commitment's checks wait at ``barrier`` for the index."""
    own = settings.router
    if rules is None:
        rules = load_rules(own.rules_file) if own.rules_file is not None else RuleSet()
    metrics = RouterMetrics(registry)
    nodes = NodeCache(catalog, own.nodes_refresh)
    associations = Associations(settings.dicom, own.timeout)
    dispatcher = Dispatcher(
        catalog, blobs, nodes, associations, metrics, own, sorted(rules.destinations)
    )

    def queued(destinations: Iterable[str]) -> None:
        dispatcher.wake(destinations)

    router = Router(bus, catalog, rules, nodes, metrics, own, queued)
    return RouterApp(
        rules=rules,
        router=router,
        dispatcher=dispatcher,
        api=RouterApi(catalog, dispatcher),
        checks={"event_bus": bus.check, "catalog": catalog.check, "blob_store": blobs.check},
        ian=notifications_from_settings(settings, bus, catalog, worklist, registry),
        retention=retention_from_settings(settings, catalog, blobs, bus, registry),
        commitment=build_commitment(settings, bus, catalog, blobs, registry, barrier),
    )
