"""The qr service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.qr.app import build


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(
        settings,
        adapters.require_catalog(),
        adapters.require_blobs(),
        registry,
        adapters.require_barrier(),
    )


SERVICE = ServiceDescriptor(
    name="qr",
    summary="C-FIND, C-GET, C-MOVE, QIDO-RS, WADO-RS and WADO-URI over the Catalog",
    needs=frozenset({Port.CATALOG, Port.BLOB_STORE}),
    build=_build,
    operations=("C-FIND", "C-GET", "C-MOVE"),
    reads_index=True,
)
