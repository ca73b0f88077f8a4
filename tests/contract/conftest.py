"""Fixtures of the contract suites: one adapter per port, on the backend ``--backend`` picks.

The suites are written against the Protocols in :mod:`micropacs.ports`, so
the embedded adapters (files, SQLite) and the distributed ones (MinIO,
Kafka, MongoDB) must pass the same tests. Each test gets its own event loop
(``run``), and the adapters are opened inside it, since the distributed
clients are bound to the loop that created them.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.config import KafkaSettings, S3Settings
from micropacs.ports import BlobStore, Catalog, EventBus
from stack import servers

T = TypeVar("T")


EMBEDDED_ONLY = ("test_files_", "test_sqlite_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the stack, skip the tests of the embedded adapters' own specifics."""
    if config.getoption("--backend") != "stack":
        return
    skip = pytest.mark.skip(reason="a specific of the embedded adapters")
    for item in items:
        if item.name.startswith(EMBEDDED_ONLY):
            item.add_marker(skip)


class Runner:
    """Runs coroutines to completion on the test's own event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a socket or file a test left unclosed fails
    that test (warnings are errors) rather than whichever later one the collector
    happens to run in."""
    yield
    gc.collect()


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


def _unique() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def blob_url(shared_stack: servers.Stack | None, tmp_path: Path) -> str:
    """Where the test's BlobStore lives: its own folder, or its own bucket."""
    if shared_stack is not None:
        return shared_stack.env["MICROPACS_STORAGE__BLOB_URL"] + f"-{_unique()}"
    return f"file://{tmp_path / 'objects'}"


@pytest.fixture
def bus_url(shared_stack: servers.Stack | None, tmp_path: Path) -> str:
    """Where the test's EventBus lives (open more instances on it to act as other processes)."""
    if shared_stack is not None:
        return shared_stack.env["MICROPACS_STORAGE__BUS_URL"]
    return f"sqlite://{tmp_path / 'events.db'}"


@pytest.fixture
def catalog_url(shared_stack: servers.Stack | None, tmp_path: Path) -> str:
    """Where the test's Catalog lives: its own file, or its own database."""
    if shared_stack is not None:
        return shared_stack.env["MICROPACS_STORAGE__CATALOG_URL"] + f"-{_unique()}"
    return f"sqlite://{tmp_path / 'catalog.db'}"


@pytest.fixture
def s3_settings(shared_stack: servers.Stack | None) -> S3Settings | None:
    """The stack's S3 credentials (None on the embedded backend)."""
    if shared_stack is None:
        return None
    return S3Settings(
        access_key=shared_stack.env["MICROPACS_S3__ACCESS_KEY"],
        secret_key=shared_stack.env["MICROPACS_S3__SECRET_KEY"],
    )


@pytest.fixture
def blob_store(blob_url: str, s3_settings: S3Settings | None, run: Runner) -> Iterator[BlobStore]:
    """A BlobStore of the test's own, fsyncing like production."""
    store = run(open_blob_store(blob_url, fsync=True, s3=s3_settings))
    yield store
    run(store.close())


@pytest.fixture
def kafka_settings() -> KafkaSettings:
    """One partition, so the bus's order is total as the contract expects of one key."""
    return KafkaSettings(partitions=1)


@pytest.fixture
def event_bus(bus_url: str, kafka_settings: KafkaSettings, run: Runner) -> Iterator[EventBus]:
    """An EventBus of the test's own."""
    bus = run(open_event_bus(bus_url, kafka_settings))
    yield bus
    run(bus.close())


@pytest.fixture
def catalog(catalog_url: str, run: Runner) -> Iterator[Catalog]:
    """A Catalog of the test's own."""
    opened = run(open_catalog(catalog_url))
    yield opened
    run(opened.close())
