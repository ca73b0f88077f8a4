"""A real stack (Kafka, MinIO, FerretDB) of the test's own, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import servers
from tests.integration.peers import free_port


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[servers.Stack]:
    reason = servers.available()
    if reason:
        pytest.skip(reason)
    ports = servers.Ports.picked_by(free_port)
    running = servers.up(tmp_path / "stack", ports)
    yield running
    servers.down(running.run_dir)
