"""What a service is to the runtime: a descriptor, and the app its ``build`` returns.

Every service folder describes itself once (``SERVICE`` in its ``descriptor.py``):
its name, the ports it needs, the DIMSE operations it answers and the
commands it adds to the CLI. The runtime, the CLI, the DICOM worker
processes and the metric labels all derive from the tuple of those
descriptors in :mod:`micropacs.service_list`; adding a service is adding a
folder and one entry there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import click
from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute

from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.http import Check
from micropacs.ports import BlobStore, Catalog, EventBus, Worklist
from micropacs.read_barrier import ReadBarrier

HandlerBinding = tuple[Any, ...]
"""A pynetdicom handler binding: ``(event, handler)`` or ``(event, handler, args)``."""

BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A coroutine function that runs until the given event is set."""


class Port(StrEnum):
    """The seams a service may need (ARCHITECTURE.md, "The three seams")."""

    BLOB_STORE = "blob_store"
    EVENT_BUS = "event_bus"
    CATALOG = "catalog"
    WORKLIST = "worklist"
    """Scheduled and performed procedure steps, the RIS's patients (its own store)."""


@dataclass(frozen=True)
class Adapters:
    """The adapters a process opened, one per port it needs."""

    blobs: BlobStore | None = None
    bus: EventBus | None = None
    catalog: Catalog | None = None
    worklist: Worklist | None = None
    barrier: ReadBarrier | None = None
    """Made on the event bus for the services that read what the index writes."""

    def require_blobs(self) -> BlobStore:
        """The BlobStore; the runtime opens it for every service that declares it."""
        if self.blobs is None:
            raise RuntimeError("this service needs Port.BLOB_STORE in its descriptor")
        return self.blobs

    def require_bus(self) -> EventBus:
        """The EventBus; the runtime opens it for every service that declares it."""
        if self.bus is None:
            raise RuntimeError("this service needs Port.EVENT_BUS in its descriptor")
        return self.bus

    def require_catalog(self) -> Catalog:
        """The Catalog; the runtime opens it for every service that declares it."""
        if self.catalog is None:
            raise RuntimeError("this service needs Port.CATALOG in its descriptor")
        return self.catalog

    def require_barrier(self) -> ReadBarrier:
        """The read barrier; the runtime makes it for every service with ``reads_index``."""
        if self.barrier is None:
            raise RuntimeError("this service needs reads_index=True in its descriptor")
        return self.barrier

    def require_worklist(self) -> Worklist:
        """The Worklist; the runtime opens it for every service that declares it."""
        if self.worklist is None:
            raise RuntimeError("this service needs Port.WORKLIST in its descriptor")
        return self.worklist


class ServiceApp(Protocol):
    """A built service: what it adds to the process's DICOM AE, HTTP server and tasks."""

    @property
    def checks(self) -> Mapping[str, Check]:
        """Readiness checks by backend name, for ``/readyz``."""
        ...

    def add_contexts(self, ae: AE) -> None:
        """Add the presentation contexts the service accepts as SCP."""
        ...

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """pynetdicom handler bindings, calling into ``bridge``'s loop."""
        ...

    def web_routes(self) -> list[BaseRoute]:
        """HTTP routes beside ``/healthz``, ``/readyz`` and ``/metrics``."""
        ...

    def background(self) -> list[BackgroundTask]:
        """Tasks that run for the life of the process (consumers)."""
        ...


@runtime_checkable
class OwnListeners(Protocol):
    """A built service that listens on ports of its own, beside DICOM and HTTP (the
    worklist's HL7 listener), which the process announces when it is ready."""

    async def listening_ports(self) -> Mapping[str, int]:
        """Once its background tasks run: each listener's name and bound port."""
        ...


@dataclass(frozen=True)
class ServiceDescriptor:
    """A service as the runtime and the CLI know it."""

    name: str
    summary: str
    needs: frozenset[Port]
    build: Callable[[Settings, Adapters, CollectorRegistry], ServiceApp]
    operations: tuple[str, ...] = ()
    """DIMSE operations it answers (e.g. ``C-STORE``); a service with some runs on the DICOM
    port and in every DICOM worker process."""
    sop_classes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """For an operation several services answer (C-FIND: Query/Retrieve and Modality
    Worklist), the SOP classes this one answers, by operation; an operation not named here
    it answers for every SOP class no other service claims (:class:`OperationOwners`)."""
    commands: tuple[click.Command, ...] = ()
    """Commands it adds to ``micropacs`` (e.g. ``import``)."""
    reads_index: bool = False
    """Whether it reads what the index writes (the catalog's instances, the worklist store):
    then its reads go through the read barrier (:mod:`micropacs.read_barrier`), which needs
    the event bus."""

    @property
    def dicom(self) -> bool:
        """Whether the service answers on the DICOM port."""
        return bool(self.operations)


def needs_of(services: Sequence[ServiceDescriptor]) -> frozenset[Port]:
    """Every port the given services need together (the event bus for a read barrier)."""
    needs = frozenset().union(*(service.needs for service in services))
    if any(service.reads_index for service in services):
        needs |= {Port.EVENT_BUS}
    return needs


@dataclass(frozen=True)
class OperationOwners:
    """Which service answers a DIMSE request: by its operation and, where several services
    answer one operation, by the SOP class it names (PS3.7 9.1, Affected SOP Class UID)."""

    default: Mapping[str, str]
    """The service answering each operation for the SOP classes nobody claims."""
    claimed: Mapping[tuple[str, str], str]
    """The service answering an (operation, SOP class UID) it declared."""

    def owner(self, operation: str, sop_class: str = "") -> str | None:
        """The name of the service answering ``operation`` for ``sop_class`` (None: none)."""
        return self.claimed.get((operation, sop_class)) or self.default.get(operation)


def operation_owners(services: Sequence[ServiceDescriptor]) -> OperationOwners:
    """The service answering each DIMSE operation and SOP class: for dispatch and metric
    labels. Two services answering one operation for the same SOP classes is a mistake
    of their descriptors, refused here. C-ECHO, which the listener itself answers
    (:mod:`micropacs.dimse.verification`), counts for the first service on it."""
    default: dict[str, str] = {}
    claimed: dict[tuple[str, str], str] = {}
    for service in services:
        for operation in service.operations:
            classes = service.sop_classes.get(operation)
            if classes is None:
                _claim(default, operation, service.name)
            for sop_class in classes or ():
                _claim(claimed, (operation, sop_class), service.name)
    listening = [service.name for service in services if service.dicom]
    if listening:
        default.setdefault("C-ECHO", listening[0])
    return OperationOwners(default=default, claimed=claimed)


def _claim(owners: dict[Any, str], key: Any, name: str) -> None:
    if key in owners and owners[key] != name:
        raise ValueError(f"{owners[key]} and {name} both answer {key}")
    owners[key] = name
