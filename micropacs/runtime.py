"""Running services in one process: ``micropacs serve`` (all) or ``micropacs run NAME`` (one).

One asyncio loop owns the adapters, the HTTP server and the background tasks;
pynetdicom's acceptor and association threads call into it through a
:class:`~micropacs.bridge.LoopBridge`. The DICOM services share one AE title
and one DICOM port, as users expect of one PACS. What runs is whatever
descriptors (:mod:`micropacs.service`) the caller passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from starlette.middleware import Middleware

from micropacs import metrics_registry, workers
from micropacs.adapters.factory import (
    open_blob_stores,
    open_catalog,
    open_event_bus,
    open_worklist,
)
from micropacs.audit import AuditTrail, audit_metrics
from micropacs.auth.gate import Gate, authenticator, require_authentication
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dimse import dispatch, handoff, observe, user_identity
from micropacs.dimse.access import NodeDirectory
from micropacs.dimse.ae import build_ae, start_server
from micropacs.dimse.audit import AssociationAudit
from micropacs.exposure import require_dicom_access
from micropacs.http import DataDirUsage, HttpServer, build_http_app
from micropacs.read_barrier import ReadBarrier, ReadBarrierMetrics
from micropacs.service import (
    Adapters,
    OwnListeners,
    Port,
    ServiceApp,
    ServiceDescriptor,
    needs_of,
    operation_owners,
)
from micropacs.tls import ServerTls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where a running process listens."""

    dicom_port: int | None
    http_port: int
    dicom_tls_port: int | None = None
    others: Mapping[str, int] = field(default_factory=dict)
    """The services' own listeners by name (``HL7``), bound."""


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
    services: Sequence[ServiceDescriptor],
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Endpoints], None] | None = None,
    worker: bool = False,
) -> None:
    """Run ``services`` until SIGTERM/SIGINT (or ``stop``), then shut down cleanly.

    A ``worker`` is an extra DICOM process of a parent that runs the rest: it
    shares the parent's port and starts no workers of its own.
    """
    require_authentication(settings)  # before anything opens: refuse an open network port
    if any(service.dicom for service in services):
        require_dicom_access(settings.dicom)
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    data_dir_lock = _prepare_data_dir(settings.data_dir)
    registry = CollectorRegistry() if metrics_registry.multiprocess() else new_registry()
    async with AsyncExitStack() as stack:
        stack.callback(os.close, data_dir_lock)
        adapters = await _open_adapters(settings, services, stack, registry)
        apps = [service.build(settings, adapters, registry) for service in services]
        dicom_port = dicom_tls_port = None
        if any(service.dicom for service in services):
            shared = worker or settings.dicom.workers > 1
            handing, channels = _handing(settings, worker)
            if isinstance(handing, handoff.Dispatcher):
                stack.callback(handing.close)
            dicom_port, dicom_tls_port = _start_dicom(
                settings, services, apps, adapters, shared, registry, stack, handing
            )
            if isinstance(handing, handoff.Receiver):
                dicom_port = settings.dicom.port  # the parent's, where callers connect
            if not worker:
                dicom = [service.name for service in services if service.dicom]
                spawned = workers.spawn(settings, dicom, dicom_port, dicom_tls_port, channels)
                stack.callback(workers.stop, spawned)
                for channel in channels:
                    channel.close()  # the worker's end, inherited by it
                if isinstance(handing, handoff.Dispatcher) and not await asyncio.to_thread(
                    handing.wait_ready, WORKERS_READY_SECONDS
                ):
                    log.warning(
                        "DICOM workers not ready: this process serves their connections",
                        extra={"waited_seconds": WORKERS_READY_SECONDS},
                    )
        http_port = await _start_http(settings, apps, adapters, registry, stack)
        # A worker only answers DICOM: its parent runs the tasks (consumers, the HL7
        # listener) once, which several processes could not share (one port, one group).
        tasks = [
            asyncio.create_task(task(stop), name=service.name)
            for service, app in zip(services, apps, strict=True)
            for task in ([] if worker else app.background())
        ]
        others: dict[str, int] = {}
        for app in [] if worker else apps:
            if isinstance(app, OwnListeners):
                others.update(await app.listening_ports())
        endpoints = Endpoints(
            dicom_port=dicom_port,
            http_port=http_port,
            dicom_tls_port=dicom_tls_port,
            others=others,
        )
        log.info(
            "micropacs started",
            extra={
                "services": [service.name for service in services],
                "ae_title": settings.dicom.ae_title,
                "dicom_port": dicom_port,
                "dicom_tls_port": dicom_tls_port,
                "http_port": http_port,
                **{f"{name.lower()}_port": port for name, port in others.items()},
                "https": settings.http.tls.cert_file is not None,
                "data_dir": str(settings.data_dir),
            },
        )
        if on_ready is not None:
            on_ready(endpoints)
        await _wait(stop, tasks)
        log.info("micropacs stopping")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (a test running the server in a thread) there are no signals.
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def _prepare_data_dir(data_dir: Path) -> int:
    """Create the data directory and its ``tmp``, swept of what a crash left there.

    Returns a descriptor holding a shared lock on ``tmp.lock`` for the process's
    life: a process sweeps only when it alone can lock it, so a worker or a
    second service on the same directory never removes files being received.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    received = data_dir / "tmp"
    received.mkdir(exist_ok=True)
    lock = os.open(data_dir / "tmp.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another live process uses the directory
    else:
        # Partial received objects (with patient names in them) left by a crash.
        for leftover in received.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    fcntl.flock(lock, fcntl.LOCK_SH)
    # pynetdicom writes each received dataset to a temporary file; keeping it on the
    # data directory's file system lets the file store move it into place.
    tempfile.tempdir = str(received)
    return lock


async def _open_adapters(
    settings: Settings,
    services: Sequence[ServiceDescriptor],
    stack: AsyncExitStack,
    registry: CollectorRegistry,
) -> Adapters:
    """The adapters the services need (and the read barrier), closed when ``stack`` closes."""
    needs = set(needs_of(services))
    if any(service.dicom for service in services):
        needs.add(Port.CATALOG)  # the node registry decides who may call and do what
    if settings.auth.backend == "local":
        needs.add(Port.CATALOG)  # tokens and users live there
    blobs = bus = catalog = None
    if Port.BLOB_STORE in needs:
        blobs = await open_blob_stores(
            settings.blob_url, settings.storage.groups, fsync=settings.storage.fsync, s3=settings.s3
        )
        stack.push_async_callback(blobs.close)
    if Port.EVENT_BUS in needs:
        # Services that only read through the barrier (qr) need no producer, nor Kafka up.
        publishes = any(Port.EVENT_BUS in service.needs for service in services)
        bus = await open_event_bus(settings.bus_url, settings.kafka, publishes=publishes)
        stack.push_async_callback(bus.close)
    if Port.CATALOG in needs:
        catalog = await open_catalog(settings.catalog_url)
        stack.push_async_callback(catalog.close)
    worklist = None
    if Port.WORKLIST in needs:
        worklist = await open_worklist(settings.worklist_url)
        stack.push_async_callback(worklist.close)
    barrier = None
    if bus is not None and any(service.reads_index for service in services):
        metrics = ReadBarrierMetrics(registry)
        barrier = ReadBarrier(bus, settings.index.group, settings.read_barrier, metrics)
        stack.push_async_callback(barrier.close)
    return Adapters(blobs=blobs, bus=bus, catalog=catalog, worklist=worklist, barrier=barrier)


WORKERS_READY_SECONDS = 60.0
"""How long the parent waits for its DICOM workers before it says it is ready."""


def _handing(
    settings: Settings, worker: bool
) -> tuple[handoff.Dispatcher | handoff.Receiver | None, list[socket.socket]]:
    """How this process shares the DICOM port with its workers, and (in the parent)
    the workers' ends of their socket pairs, to be inherited by them."""
    if worker:
        channel = handoff.worker_channel()
        return (None if channel is None else handoff.Receiver(channel)), []
    if settings.dicom.workers <= 1:
        return None, []
    parents, children = handoff.channels(settings.dicom.workers - 1)
    return handoff.Dispatcher(parents), children


def _start_dicom(
    settings: Settings,
    services: Sequence[ServiceDescriptor],
    apps: Sequence[ServiceApp],
    adapters: Adapters,
    reuse_port: bool,
    registry: CollectorRegistry,
    stack: AsyncExitStack,
    handing: handoff.Dispatcher | handoff.Receiver | None = None,
) -> tuple[int, int | None]:
    """One AE for every DICOM service, listening until ``stack`` closes, on the DICOM port
    and, with a certificate, on the DICOM TLS port with the same handlers; returns both
    ports (None: no TLS).

    A parent with a :class:`~micropacs.dimse.handoff.Dispatcher` alone listens on the
    DICOM port and hands connections to its workers; a worker with a
    :class:`~micropacs.dimse.handoff.Receiver` serves what it is handed (its own plain
    listener is on an unused loopback port). The TLS port stays shared (``reuse_port``).
    """
    files = settings.dicom.tls
    # Before anything listens: a certificate that does not load stops the start.
    secure = None
    if files.cert_file is not None:
        secure = ServerTls(files.cert_file, files.key_file, files.ca_file)
    bridge = LoopBridge(asyncio.get_running_loop())
    nodes = _node_directory(adapters, bridge)
    identities = user_identity.from_settings(settings, adapters.catalog, bridge)
    ae = build_ae(settings.dicom, nodes=nodes, identities=identities)
    owners = operation_owners(services)
    handlers = observe.handlers(
        observe.AssociationMetrics(registry),
        nodes.titles if nodes is not None else list,
        owners,
    )
    if adapters.bus is not None:
        trail = AuditTrail(adapters.bus, audit_metrics(registry))
        handlers.extend(AssociationAudit(trail, bridge.loop).handlers())
    for app in apps:
        app.add_contexts(ae)
    handlers.extend(
        dispatch.combine(
            owners,
            [
                (service.name, app.dimse_handlers(bridge))
                for service, app in zip(services, apps, strict=True)
            ],
        )
    )
    if isinstance(handing, handoff.Receiver):
        server = start_server(ae, "127.0.0.1", 0, [*handlers, handing.binding()])
        handing.start(server.process_request)
    else:
        server = start_server(
            ae,
            settings.dicom.host,
            settings.dicom.port,
            handlers,
            reuse_port=reuse_port and handing is None,
            dispatcher=handing,
        )

    async def shutdown() -> None:
        await asyncio.to_thread(ae.shutdown)  # every server of the AE, TLS too

    stack.push_async_callback(shutdown)
    tls_port = None
    if secure is not None:
        tls_server = start_server(
            ae, settings.dicom.host, files.port, handlers, reuse_port=reuse_port, tls_server=secure
        )
        tls_port = int(tls_server.server_address[1])
    return int(server.server_address[1]), tls_port


def _node_directory(adapters: Adapters, bridge: LoopBridge) -> NodeDirectory | None:
    """The node registry, read at most once a second (None without a catalog)."""
    catalog = adapters.catalog
    if catalog is None:
        return None
    return NodeDirectory(lambda: bridge.run(catalog.nodes(), timeout=10))


async def _start_http(
    settings: Settings,
    apps: Sequence[ServiceApp],
    adapters: Adapters,
    registry: CollectorRegistry,
    stack: AsyncExitStack,
) -> int:
    """Health, readiness, metrics and the services' routes; returns the bound port."""
    checks = {name: check for app in apps for name, check in app.checks.items()}
    routes = [route for app in apps for route in app.web_routes()]
    access = Middleware(
        Gate,
        authenticate=authenticator(settings, adapters.catalog),
        metrics_open=settings.auth.metrics_open,
        basic=settings.auth.backend == "local",
    )
    http = HttpServer(
        build_http_app(
            registry,
            checks,
            routes,
            settings.http.cors_origins,
            exposition_registry(registry, settings.data_dir),
            access,
            {} if adapters.barrier is None else {"index_behind_offsets": adapters.barrier.progress},
        ),
        settings.http.host,
        settings.http.port,
        settings.http,
    )
    port = await http.start()
    stack.push_async_callback(http.stop)
    return port


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
