"""The services of ``micropacs serve``, built in the test process with their ``build(...)``.

Every piece of assembly of this suite lives here (STYLE.md, conventions 1 and
8), put together as :mod:`micropacs.runtime` does it: one asyncio loop in its
own thread owns the embedded adapters (``file://`` and ``sqlite://`` under the
test's folder) and runs the index consumer as a task; pynetdicom's acceptor,
built with :func:`~micropacs.dimse.ae.build_ae` and started with
:func:`~micropacs.dimse.ae.start_server` on a port the OS picks, calls the
ingest and qr handlers, which cross into the loop through a
:class:`~micropacs.bridge.LoopBridge`. Tests get a :class:`Running` from the
``pacs`` fixture (defaults) or from ``start_pacs(...)`` (options), talk to it
with a real pynetdicom SCU (:mod:`tests.service.peers`) and reach its
adapters, apps and loop through it. No subprocess, no fake.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.applications import Starlette

from micropacs.adapters.factory import (
    open_blob_store,
    open_catalog,
    open_event_bus,
    open_worklist,
)
from micropacs.adapters.sqlite_bus import SqliteEventBus
from micropacs.adapters.sqlite_catalog import SqliteCatalog
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dimse import dispatch, observe
from micropacs.dimse.access import NodeDirectory
from micropacs.dimse.ae import build_ae, start_server
from micropacs.http import build_http_app
from micropacs.ports import BlobStore, Catalog, EventBus, InstanceLocation, Record, Worklist
from micropacs.read_barrier import ReadBarrier, ReadBarrierMetrics
from micropacs.routing.rules import RuleSet
from micropacs.service import Adapters, ServiceApp, operation_owners
from micropacs.service_list import SERVICES, names
from services.admin.app import AdminApp
from services.admin.app import build as build_admin
from services.index.app import IndexApp
from services.index.app import build as build_index
from services.ingest.app import IngestApp
from services.ingest.app import build as build_ingest
from services.qr.app import QrApp
from services.qr.app import build as build_qr
from services.router.app import RouterApp
from services.router.app import build as build_router
from services.worklist.app import WorklistApp
from services.worklist.app import build as build_worklist

T = TypeVar("T")

HOST = "127.0.0.1"
AE_TITLE = "MICROPACS"
CALL_TIMEOUT = 30.0
"""Seconds a call into the service loop may take before the test fails."""


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or condition}")
        time.sleep(0.02)


class Running:
    """One in-process micropacs: ingest, qr, index (with its worklist consumers), worklist,
    admin and router over embedded adapters, the reads of qr and worklist behind one read
    barrier; the ingest and the router with ``rules`` (none by default).

    ``loop_call`` runs a coroutine on the service loop (where the adapters
    live) and returns its result.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        index: bool = True,
        busy_timeout: float | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.tmp_dir = settings.data_dir / "tmp"
        self.host = HOST
        self.ae_title = settings.dicom.ae_title
        self.registry = CollectorRegistry()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="service-loop", daemon=True
        )
        self._stop: asyncio.Event | None = None
        self._tasks: list[Future[None]] = []
        self._ae: AE | None = None
        self._http: Starlette | None = None
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._previous_tempdir = tempfile.tempdir

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        # As the runtime does: pynetdicom's received datasets (and our own temporary
        # files) go to the data directory, so the file store can move them into place.
        tempfile.tempdir = str(self.tmp_dir)
        self._thread.start()
        try:
            self.blobs, self.bus, self.catalog = self.loop_call(self._open(busy_timeout))
            self.barrier = ReadBarrier(
                self.bus,
                settings.index.group,
                settings.read_barrier,
                ReadBarrierMetrics(self.registry),
            )
            self._closers.append(self.barrier.close)
            self.ingest: IngestApp = build_ingest(
                settings, self.blobs, self.bus, self.registry, rules or RuleSet()
            )
            self.qr: QrApp = build_qr(
                settings, self.catalog, self.blobs, self.registry, self.barrier
            )
            self.worklist: Worklist = self.loop_call(self._open_worklist())
            self.index: IndexApp = build_index(
                settings, self.bus, self.catalog, self.registry, self.worklist
            )
            self.worklist_app: WorklistApp = build_worklist(
                settings,
                self.bus,
                self.worklist,
                self.registry,
                catalog=self.catalog,
                barrier=self.barrier,
            )
            self.admin: AdminApp = build_admin(
                settings,
                Adapters(self.blobs, self.bus, self.catalog, self.worklist, self.barrier),
                self.registry,
            )
            self.router: RouterApp = build_router(
                settings,
                self.bus,
                self.catalog,
                self.blobs,
                self.registry,
                rules or RuleSet(),
                barrier=self.barrier,
            )
            self.apps: list[ServiceApp] = [
                self.ingest,
                self.index,
                self.qr,
                self.worklist_app,
                self.admin,
                self.router,
            ]
            self.port = self._start_dicom()
            if index:
                self.start_background()
        except BaseException:
            self.close()
            raise

    # -- assembly -------------------------------------------------------------------------

    async def _open(self, busy_timeout: float | None) -> tuple[BlobStore, EventBus, Catalog]:
        settings = self.settings
        blobs = await open_blob_store(settings.blob_url, fsync=settings.storage.fsync)
        self._closers.append(blobs.close)
        bus: EventBus
        catalog: Catalog
        if busy_timeout is None:
            bus = await open_event_bus(settings.bus_url)
            self._closers.append(bus.close)
            catalog = await open_catalog(settings.catalog_url)
            self._closers.append(catalog.close)
        else:
            # The same embedded adapters, giving up sooner on a lock another connection holds.
            sqlite_bus = SqliteEventBus(_sqlite_path(settings.bus_url), busy_timeout=busy_timeout)
            self._closers.append(sqlite_bus.close)
            await sqlite_bus.open()
            sqlite_catalog = SqliteCatalog(
                _sqlite_path(settings.catalog_url), busy_timeout=busy_timeout
            )
            self._closers.append(sqlite_catalog.close)
            await sqlite_catalog.open()
            bus, catalog = sqlite_bus, sqlite_catalog
        return blobs, bus, catalog

    async def _open_worklist(self) -> Worklist:
        worklist = await open_worklist(self.settings.worklist_url)
        self._closers.append(worklist.close)
        return worklist

    def _start_dicom(self) -> int:
        bridge = LoopBridge(self._loop)

        def known_titles() -> list[str]:
            return [node.ae_title for node in bridge.run(self.catalog.nodes(), timeout=10)]

        # As the runtime does: the node registry decides who may call and do what.
        nodes = NodeDirectory(lambda: bridge.run(self.catalog.nodes(), timeout=10))
        ae = build_ae(self.settings.dicom, known_titles, nodes=nodes)
        self._ae = ae
        owners = operation_owners(SERVICES)
        handlers: list[Any] = observe.handlers(
            observe.AssociationMetrics(self.registry), known_titles, owners
        )
        for app in self.apps:
            app.add_contexts(ae)
        # As the runtime does: one handler per operation, chosen by SOP class.
        bindings = [
            (name, app.dimse_handlers(bridge)) for name, app in zip(names(), self.apps, strict=True)
        ]
        handlers.extend(dispatch.combine(owners, bindings))
        server = start_server(ae, HOST, 0, handlers)
        return int(server.server_address[1])

    def start_background(self) -> None:
        """Run the services' background tasks (the index consumer) on the service loop."""
        assert not self._tasks, "the background tasks already run"

        async def new_stop() -> asyncio.Event:
            return asyncio.Event()

        stop = self._stop = self.loop_call(new_stop())
        self._tasks = [
            asyncio.run_coroutine_threadsafe(task(stop), self._loop)
            for app in self.apps
            for task in app.background()
        ]

    def stop_background(self, timeout: float = 10.0) -> None:
        """Stop the background tasks; raises what made one fail, if one did."""
        tasks, stop = self._tasks, self._stop
        self._tasks, self._stop = [], None
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        for task in tasks:
            task.result(timeout)

    def background_failure(self) -> BaseException | None:
        """What ended a background task early, if one has died."""
        for task in self._tasks:
            if task.done():
                return task.exception() or RuntimeError("a background task returned")
        return None

    # -- reaching into the service ------------------------------------------------------

    def loop_call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coro`` on the service loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the services' registry (0 when it was never set)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def http_app(self) -> Starlette:
        """The HTTP app the runtime serves: health, metrics and the services' routes."""
        if self._http is None:
            routes = [route for app in self.apps for route in app.web_routes()]
            checks = {name: check for app in self.apps for name, check in app.checks.items()}
            self._http = build_http_app(self.registry, checks, routes)
        return self._http

    def published(self, topic: str) -> list[Record]:
        """Every event of ``topic`` in the event log, read through a bus of its own."""

        async def read() -> list[Record]:
            reader = await open_event_bus(self.settings.bus_url)
            try:
                consumer = await reader.consumer(topic, f"probe-{uuid.uuid4().hex[:12]}")
                records: list[Record] = []
                while batch := await consumer.poll(500, 0):
                    records += batch
                await consumer.close()
                return records
            finally:
                await reader.close()

        return self.loop_call(read())

    def uncommitted(self, topic: str, group: str) -> list[Record]:
        """Events of ``topic`` that ``group`` has not committed (stop its consumer first)."""

        async def read() -> list[Record]:
            consumer = await self.bus.consumer(topic, group)
            try:
                return await consumer.poll(500, 0)
            finally:
                await consumer.close()

        return self.loop_call(read())

    def located(self, sop_instance_uids: Sequence[str]) -> list[InstanceLocation]:
        """The catalog's locations of these instances (those it has)."""
        return self.loop_call(self.catalog.locate(sop_instance_uids=list(sop_instance_uids)))

    def wait_indexed(
        self, sop_instance_uids: Sequence[str], timeout: float = 15.0
    ) -> list[InstanceLocation]:
        """Wait until the index consumer has written all of these instances."""

        def done() -> list[InstanceLocation]:
            failure = self.background_failure()
            if failure is not None:
                raise AssertionError("a background task died") from failure
            found = self.located(sop_instance_uids)
            return found if len(found) == len(set(sop_instance_uids)) else []

        return wait_until(done, timeout, f"{len(sop_instance_uids)} instances indexed")

    def stored_keys(self) -> list[str]:
        """Every object key in the file store."""

        async def keys() -> list[str]:
            return [key async for key in self.blobs.iterate()]

        return self.loop_call(keys())

    def leftovers(self) -> list[str]:
        """Files left in the data directory's temporary folder."""
        return sorted(path.name for path in self.tmp_dir.iterdir())

    # -- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the DICOM server, the background tasks, the adapters and the loop, in that
        order; raises the first thing that failed once everything is closed."""
        errors: list[BaseException] = []

        def attempt(step: Callable[..., object], *args: Any) -> None:
            try:
                step(*args)
            except Exception as exc:
                errors.append(exc)

        if self._ae is not None:
            ae, self._ae = self._ae, None
            attempt(self._shutdown_dicom, ae)
        attempt(self.stop_background)
        while self._closers:
            attempt(self.loop_call, self._closers.pop()())
        attempt(self.loop_call, self._loop.shutdown_default_executor())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        tempfile.tempdir = self._previous_tempdir
        if errors:
            raise errors[0]

    @staticmethod
    def _shutdown_dicom(ae: AE) -> None:
        associations = ae.active_associations
        ae.shutdown()
        for association in associations:
            association.join(10)


def _sqlite_path(url: str) -> Path:
    return Path(url.split("://", 1)[1])


def service_settings(data_dir: Path, **storage: Any) -> Settings:
    """Settings of an in-process service under ``data_dir`` on free ports."""
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "dicom": {"host": HOST, "port": 0, "ae_title": AE_TITLE, "strict_nodes": False},
            "http": {"host": HOST, "port": 0},
            # No fsync: these stores are thrown away; every write path is the same otherwise.
            "storage": {"fsync": False, "blob_url": None, "bus_url": None, "catalog_url": None}
            | storage,
            "index": {"poll_interval": 0.05},
            "router": {"poll_interval": 0.05, "idle_interval": 0.1},
            "commitment": {"poll_interval": 0.05},
            "worklist": {"hl7_port": 0},
        }
    )


class StartPacs(Protocol):
    def __call__(
        self,
        *,
        compression: str = "none",
        index: bool = True,
        busy_timeout: float | None = None,
        barrier_timeout: float | None = None,
        rules: RuleSet | None = None,
        router: dict[str, Any] | None = None,
        commitment: dict[str, Any] | None = None,
    ) -> Running: ...


@pytest.fixture
def start_pacs(tmp_path: Path) -> Iterator[StartPacs]:
    """Start services of the test's own; every one is closed at the end of the test.

    ``compression`` is the storage group's compression at rest; ``index=False``
    leaves the index consumer stopped (``Running.start_background`` starts it);
    ``busy_timeout`` makes the SQLite event log and catalog give up on a lock
    held by another connection after that many seconds (default 30);
    ``barrier_timeout`` bounds the read barrier (default 2 s); ``rules`` are the
    ingest's and the router's, and ``router`` overrides its settings (``RouterSettings`` fields),
    ``commitment`` those of Storage Commitment (``CommitmentSettings`` fields).
    """
    started: list[Running] = []

    def start(
        *,
        compression: str = "none",
        index: bool = True,
        busy_timeout: float | None = None,
        barrier_timeout: float | None = None,
        rules: RuleSet | None = None,
        router: dict[str, Any] | None = None,
        commitment: dict[str, Any] | None = None,
    ) -> Running:
        data_dir = tmp_path / f"data{len(started)}"
        settings = service_settings(data_dir, compression=compression)
        if barrier_timeout is not None:
            settings.read_barrier.timeout = barrier_timeout
        if router:
            settings.router = settings.router.model_copy(update=router)
        if commitment:
            settings.commitment = settings.commitment.model_copy(update=commitment)
        running = Running(settings, index=index, busy_timeout=busy_timeout, rules=rules)
        started.append(running)
        return running

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for running in reversed(started):
            try:
                running.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def pacs(start_pacs: StartPacs) -> Running:
    """The three services with default settings and the index consumer running."""
    return start_pacs()
