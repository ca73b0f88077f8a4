"""Options shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack import servers
from tests.integration.peers import free_port


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--backend``: the embedded adapters or the real stack (MinIO, Kafka, MongoDB)."""
    parser.addoption(
        "--backend",
        choices=("embedded", "stack"),
        default="embedded",
        help="adapters the contract and integration tests run against (default: embedded)",
    )


@pytest.fixture(scope="session")
def shared_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.Stack | None]:
    """The real stack of a ``--backend stack`` session (None on the embedded backend)."""
    if request.config.getoption("--backend") != "stack":
        yield None
        return
    reason = servers.available()
    if reason:
        pytest.skip(reason)
    ports = servers.Ports.picked_by(free_port)
    stack = servers.up(tmp_path_factory.mktemp("stack"), ports)
    yield stack
    servers.down(stack.run_dir)
