"""Running services in one process: ``micropacs serve`` (all) or ``micropacs run NAME`` (one).

One asyncio loop owns the adapters, the HTTP server and the index consumer;
pynetdicom's acceptor and association threads call into it through a
:class:`~micropacs.bridge.LoopBridge`. Ingest and qr share one AE title and
one DICOM port, as users expect of one PACS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from micropacs import metrics_registry, workers
from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check, DataDirUsage, HttpServer, build_http_app
from micropacs.ports import BlobStore, Catalog, EventBus

log = logging.getLogger(__name__)

SERVICES = ("ingest", "index", "qr")


@dataclass(frozen=True)
class Endpoints:
    """Where a running process listens."""

    dicom_port: int | None
    http_port: int


def new_registry() -> CollectorRegistry:
    """A metrics registry with the process, platform and GC defaults."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition_registry(own: CollectorRegistry, data_dir: Path) -> CollectorRegistry:
    """What ``/metrics`` shows: ``own``, or with workers, every process's metrics summed
    (plus this process's defaults and the data volume)."""
    if not metrics_registry.multiprocess():
        own.register(DataDirUsage(data_dir))
        return own
    from prometheus_client import multiprocess

    shown = new_registry()
    multiprocess.MultiProcessCollector(shown)  # type: ignore[no-untyped-call]
    shown.register(DataDirUsage(data_dir))
    return shown


async def run(
    settings: Settings,
    services: Sequence[str] = SERVICES,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Endpoints], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Run ``services`` until SIGTERM/SIGINT (or ``stop``), then shut down cleanly."""
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; choose from {SERVICES}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (a test running the server in a thread) there are no signals.
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    received = settings.data_dir / "tmp"
    received.mkdir(exist_ok=True)
    # pynetdicom writes each received dataset to a temporary file; keeping it on the
    # data directory's file system lets the file store move it into place.
    tempfile.tempdir = str(received)

    registry = CollectorRegistry() if metrics_registry.multiprocess() else new_registry()
    bridge = LoopBridge(loop)
    async with AsyncExitStack() as stack:
        blobs: BlobStore | None = None
        bus: EventBus | None = None
        catalog: Catalog | None = None
        if {"ingest", "qr"} & set(services):
            blobs = await open_blob_store(
                settings.blob_url, fsync=settings.storage.fsync, s3=settings.s3
            )
            stack.push_async_callback(blobs.close)
        if {"ingest", "index"} & set(services):
            bus = await open_event_bus(settings.bus_url, settings.kafka)
            stack.push_async_callback(bus.close)
        if {"index", "qr"} & set(services) or settings.dicom.strict_nodes:
            catalog = await open_catalog(settings.catalog_url)
            stack.push_async_callback(catalog.close)

        checks: dict[str, Check] = {}
        dicom_apps: list[Any] = []
        tasks: list[asyncio.Task[None]] = []
        if "ingest" in services:
            from services.ingest.app import build as build_ingest

            assert blobs is not None and bus is not None
            ingest = build_ingest(settings, blobs, bus, registry)
            dicom_apps.append(ingest)
            checks.update(ingest.checks)
        if "qr" in services:
            from services.qr.app import build as build_qr

            assert catalog is not None and blobs is not None
            qr = build_qr(settings, catalog, blobs, registry)
            dicom_apps.append(qr)
            checks.update(qr.checks)
        if "index" in services:
            from services.index.app import build as build_index

            assert bus is not None and catalog is not None
            index = build_index(settings, bus, catalog, registry)
            checks.update(index.checks)
            tasks.append(asyncio.create_task(index.indexer.run(stop), name="index"))

        dicom_port = None
        if dicom_apps:
            shared = reuse_port or settings.dicom.workers > 1
            dicom_port = _start_dicom(
                settings, dicom_apps, bridge, catalog, shared, stack, registry
            )
            started = workers.spawn(settings, services, dicom_port)
            stack.callback(workers.stop, started)

        routes = [route for app in dicom_apps for route in app.web_routes()]
        http = HttpServer(
            build_http_app(
                registry,
                checks,
                routes,
                settings.http.cors_origins,
                exposition_registry(registry, settings.data_dir),
            ),
            settings.http.host,
            settings.http.port,
        )
        http_port = await http.start()
        stack.push_async_callback(http.stop)

        endpoints = Endpoints(dicom_port=dicom_port, http_port=http_port)
        log.info(
            "micropacs started",
            extra={
                "services": list(services),
                "ae_title": settings.dicom.ae_title,
                "dicom_port": dicom_port,
                "http_port": http_port,
                "data_dir": str(settings.data_dir),
            },
        )
        if on_ready is not None:
            on_ready(endpoints)
        await _wait(stop, tasks)
        log.info("micropacs stopping")


def _start_dicom(
    settings: Settings,
    apps: list[Any],
    bridge: LoopBridge,
    catalog: Catalog | None,
    reuse_port: bool,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
) -> int:
    from micropacs.dimse import observe
    from micropacs.dimse.ae import build_ae, start_server

    cache: tuple[float, list[str]] = (0.0, [])

    def known_titles() -> list[str]:
        """The registry's AE titles, read at most once a second."""
        nonlocal cache
        if catalog is None:
            return []
        if time.monotonic() - cache[0] > 1.0:
            titles = [node.ae_title for node in bridge.run(catalog.nodes(), timeout=10)]
            cache = (time.monotonic(), titles)
        return cache[1]

    ae = build_ae(settings.dicom, known_titles if catalog is not None else None)
    handlers: list[Any] = observe.handlers(observe.AssociationMetrics(registry), known_titles)
    for app in apps:
        app.add_contexts(ae)
        handlers.extend(app.handlers(bridge))
    server = start_server(
        ae, settings.dicom.host, settings.dicom.port, handlers, reuse_port=reuse_port
    )

    async def shutdown() -> None:
        await asyncio.to_thread(ae.shutdown)

    stack.push_async_callback(shutdown)
    return int(server.server_address[1])


async def _wait(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop``; a background task that dies stops the process too."""
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = {stopper, *tasks}
    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for task in tasks:
        if task in done and task.exception() is not None:
            log.error("service task failed", exc_info=task.exception())
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        if not task.done():
            task.cancel()
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failed:
        raise RuntimeError(f"service task {failed[0].get_name()} failed") from failed[0].exception()
