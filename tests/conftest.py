"""Options shared by every test suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--backend``: the embedded adapters or the real stack (MinIO, Kafka, MongoDB)."""
    parser.addoption(
        "--backend",
        choices=("embedded", "stack"),
        default="embedded",
        help="adapters the contract and integration tests run against (default: embedded)",
    )
