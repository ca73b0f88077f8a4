from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One micropacs serve process per test module, on fresh data."""
    running = start_server(tmp_path_factory.mktemp("pacs") / "data")
    yield running
    running.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A micropacs serve process of the test's own."""
    running = start_server(tmp_path / "data")
    yield running
    running.stop()
