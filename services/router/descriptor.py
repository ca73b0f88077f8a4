"""The router service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.router.app import build


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(
        settings,
        adapters.require_bus(),
        adapters.require_catalog(),
        adapters.require_blobs(),
        registry,
    )


SERVICE = ServiceDescriptor(
    name="router",
    summary="Forwards stored instances by the routing rules, through a durable queue per"
    " destination (C-STORE SCU)",
    needs=frozenset({Port.EVENT_BUS, Port.CATALOG, Port.BLOB_STORE}),
    build=_build,
)
