"""Fixtures of the contract suites: one adapter per port, on the backend ``--backend`` picks.

The suites are written against the Protocols in :mod:`micropacs.ports`, so
the embedded adapters (files, SQLite) and the distributed ones (MinIO,
Kafka, MongoDB) must pass the same tests. Each test gets its own event loop
(``run``), and the adapters are opened inside it, since the distributed
clients are bound to the loop that created them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.ports import BlobStore, Catalog, EventBus

T = TypeVar("T")

STACK_PENDING = (
    "the stack backend (MinIO, Kafka, MongoDB) arrives with the distributed adapters;"
    " run with --backend embedded"
)


class Runner:
    """Runs coroutines to completion on the test's own event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``stack`` (the ``--backend`` option)."""
    return str(request.config.getoption("--backend"))


@pytest.fixture
def run() -> Iterator[Runner]:
    """A fresh event loop for the test, shut down cleanly afterwards."""
    loop = asyncio.new_event_loop()
    try:
        yield Runner(loop)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@pytest.fixture
def blob_url(backend: str, tmp_path: Path) -> str:
    """Where the test's BlobStore lives."""
    if backend == "stack":
        pytest.skip(STACK_PENDING)
    return f"file://{tmp_path / 'objects'}"


@pytest.fixture
def bus_url(backend: str, tmp_path: Path) -> str:
    """Where the test's EventBus lives (open more instances on it to act as other processes)."""
    if backend == "stack":
        pytest.skip(STACK_PENDING)
    return f"sqlite://{tmp_path / 'events.db'}"


@pytest.fixture
def catalog_url(backend: str, tmp_path: Path) -> str:
    """Where the test's Catalog lives."""
    if backend == "stack":
        pytest.skip(STACK_PENDING)
    return f"sqlite://{tmp_path / 'catalog.db'}"


@pytest.fixture
def blob_store(blob_url: str, run: Runner) -> Iterator[BlobStore]:
    """A BlobStore of the test's own, fsyncing like production."""
    store = run(open_blob_store(blob_url, fsync=True))
    yield store
    run(store.close())


@pytest.fixture
def event_bus(bus_url: str, run: Runner) -> Iterator[EventBus]:
    """An EventBus of the test's own."""
    bus = run(open_event_bus(bus_url))
    yield bus
    run(bus.close())


@pytest.fixture
def catalog(catalog_url: str, run: Runner) -> Iterator[Catalog]:
    """A Catalog of the test's own."""
    opened = run(open_catalog(catalog_url))
    yield opened
    run(opened.close())
