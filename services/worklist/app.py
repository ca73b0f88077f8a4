"""Builds the worklist service from settings and adapters (no I/O here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from pynetdicom import AE, evt
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import Catalog, EventBus, Worklist
from micropacs.read_barrier import ReadBarrier
from micropacs.service import BackgroundTask, HandlerBinding
from services.worklist import mpps, mwl
from services.worklist.api import WorklistApi
from services.worklist.metrics import WorklistMetrics
from services.worklist.missing_images import MissingImages
from services.worklist.mllp import MllpListener
from services.worklist.scheduling import Scheduler

log = logging.getLogger(__name__)


@dataclass
class WorklistApp:
    """The worklist service: Modality Worklist C-FIND, MPPS N-CREATE/N-SET, the HL7
    v2 listener and the worklist API."""

    worklist: mwl.ModalityWorklist
    performed: mpps.PerformedSteps
    hl7: MllpListener
    missing_images: MissingImages
    api: WorklistApi
    metrics: WorklistMetrics
    checks: Mapping[str, Check]
    hl7_bound: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the HL7 listener listens, or failed to."""

    def add_contexts(self, ae: AE) -> None:
        """Accept the Modality Worklist FIND model and the MPPS SOP Class."""
        mwl.add_contexts(ae)
        mpps.add_contexts(ae)

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """C-FIND of the worklist, N-CREATE and N-SET of MPPS, calling into ``bridge``'s loop."""
        return [
            (evt.EVT_C_FIND, mwl.handle_find, [self.worklist, bridge, self.metrics]),
            (evt.EVT_N_CREATE, mpps.handle_create, [self.performed, bridge]),
            (evt.EVT_N_SET, mpps.handle_set, [self.performed, bridge]),
        ]

    def web_routes(self) -> list[BaseRoute]:
        """The worklist API (``/api/worklist/items``)."""
        return self.api.routes()

    async def listening_ports(self) -> Mapping[str, int]:
        """Once the background tasks run: the HL7 listener's bound port (none if it failed)."""
        await self.hl7_bound.wait()
        return {"HL7": self.hl7.port} if self.hl7.listening.is_set() else {}

    def background(self) -> list[BackgroundTask]:
        """The HL7 listener and the check for procedures completed without images."""
        return [self.serve_hl7, self.missing_images.run]

    async def serve_hl7(self, stop: asyncio.Event) -> None:
        """Run the HL7 listener until ``stop``; a listener that fails (its port taken)
        fails the task, and with it the process."""
        listening = asyncio.create_task(self.hl7.serve(), name="hl7")
        stopping = asyncio.create_task(stop.wait())
        started = asyncio.create_task(self.hl7.listening.wait())
        try:
            await asyncio.wait({listening, started}, return_when=asyncio.FIRST_COMPLETED)
            self.hl7_bound.set()
            if started.done():
                log.info("HL7 listener started", extra={"hl7_port": self.hl7.port})
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hl7_bound.set()
            for task in (listening, stopping, started):
                task.cancel()
            await asyncio.gather(stopping, started, return_exceptions=True)
        if not listening.cancelled() and listening.done() and listening.exception():
            raise RuntimeError("the HL7 listener stopped") from listening.exception()
        await asyncio.gather(listening, return_exceptions=True)


def build(
    settings: Settings,
    bus: EventBus,
    worklist: Worklist,
    registry: CollectorRegistry,
    *,
    catalog: Catalog,
    barrier: ReadBarrier | None,
) -> WorklistApp:
    """The worklist service over the given adapters (the catalog to find the images of
    completed procedures); its reads of the store wait at ``barrier``."""
    metrics = WorklistMetrics(registry)
    return WorklistApp(
        worklist=mwl.ModalityWorklist(
            worklist, metrics, settings.worklist, settings.query, barrier
        ),
        performed=mpps.PerformedSteps(bus, worklist, metrics, barrier=barrier),
        hl7=MllpListener(
            settings.worklist, bus, registry, default_issuer=settings.issuer_of_patient_id
        ),
        missing_images=MissingImages(worklist, catalog, settings.worklist, settings.query, metrics),
        api=WorklistApi(
            Scheduler(bus, worklist, settings.query.max_results, barrier),
            settings.worklist.api_max_item_bytes,
        ),
        metrics=metrics,
        checks={"event_bus": bus.check, "worklist": worklist.check},
    )
