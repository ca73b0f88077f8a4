"""The router service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.dicom.commitment import STORAGE_COMMITMENT_PUSH
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.router.app import build
from services.router.retention_command import retention_command


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(
        settings,
        adapters.require_bus(),
        adapters.require_catalog(),
        adapters.require_blobs(),
        registry,
        worklist=adapters.require_worklist(),
        barrier=adapters.require_barrier(),
    )


SERVICE = ServiceDescriptor(
    name="router",
    summary="Forwards stored instances by the routing rules, through a durable queue per"
    " destination (C-STORE SCU), notifies the RIS of available instances (IAN SCU) and"
    " answers Storage Commitment (N-ACTION, N-EVENT-REPORT)",
    needs=frozenset({Port.EVENT_BUS, Port.CATALOG, Port.BLOB_STORE, Port.WORKLIST}),
    build=_build,
    operations=("N-ACTION",),
    sop_classes={"N-ACTION": frozenset({STORAGE_COMMITMENT_PUSH})},
    commands=(retention_command,),
    reads_index=True,
)
