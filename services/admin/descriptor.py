"""The admin service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.admin.app import build


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(settings, adapters, registry)


SERVICE = ServiceDescriptor(
    name="admin",
    summary="The REST API and web UI: nodes, browse, send, delete, worklist, status, users",
    needs=frozenset({Port.CATALOG, Port.EVENT_BUS, Port.WORKLIST, Port.BLOB_STORE}),
    build=_build,
    reads_index=True,
)
