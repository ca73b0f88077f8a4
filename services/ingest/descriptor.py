"""The ingest service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.ingest.app import build
from services.ingest.commands import import_command


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(settings, adapters.require_blobs(), adapters.require_bus(), registry)


SERVICE = ServiceDescriptor(
    name="ingest",
    summary="C-STORE and STOW-RS: objects into the BlobStore, events onto the bus",
    needs=frozenset({Port.BLOB_STORE, Port.EVENT_BUS}),
    build=_build,
    operations=("C-STORE",),
    commands=(import_command,),
)
