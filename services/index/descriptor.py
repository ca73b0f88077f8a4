"""The index service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.index.app import build


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(
        settings,
        adapters.require_bus(),
        adapters.require_catalog(),
        registry,
        adapters.require_worklist(),
        adapters.require_blobs(),
    )


SERVICE = ServiceDescriptor(
    name="index",
    summary="instance.stored and deletion events into the Catalog (and the BlobStore);"
    " worklist, MPPS and patient events into the Worklist store",
    needs=frozenset({Port.EVENT_BUS, Port.CATALOG, Port.WORKLIST, Port.BLOB_STORE}),
    build=_build,
)
