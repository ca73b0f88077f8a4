"""Servers for the integration tests, on the embedded stores or on the real stack.

``pytest --backend stack`` runs the same tests against Kafka, MinIO and the
MongoDB-compatible catalog: one stack per session, and each server gets its
own bucket, topic prefix and database so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from micropacs.config import Settings
from stack import servers
from tests.integration.server import Server, start_server


def consumer_group_sections() -> list[str]:
    """The settings sections with a consumer group of their own (index, router, IAN…)."""
    sections = []
    for name, field in Settings.model_fields.items():
        fields = getattr(field.annotation, "model_fields", {})
        if "group" in fields and "Consumer group" in (fields["group"].description or ""):
            sections.append(name)
    return sections


def isolated_env(stack: servers.Stack | None) -> dict[str, str]:
    """Settings that put one server on its own bucket, topics, consumer groups and
    database."""
    if stack is None:
        return {}
    name = "t" + uuid.uuid4().hex[:12]
    env = dict(stack.env)
    env["MICROPACS_STORAGE__BLOB_URL"] += f"-{name}"
    env["MICROPACS_KAFKA__TOPIC_PREFIX"] = f"{name}."
    # Every consumer group its own too: members of one group rebalance together, whatever
    # topics they read, so servers sharing a group would hold up each other's consumers
    # at every start and kill.
    for section in consumer_group_sections():
        env[f"MICROPACS_{section.upper()}__GROUP"] = f"{section}-{name}"
    env["MICROPACS_STORAGE__CATALOG_URL"] += f"-{name}"
    return env


@pytest.fixture
def server_env(shared_stack: servers.Stack | None) -> dict[str, str]:
    """The environment of a new server of the test's own."""
    return isolated_env(shared_stack)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, shared_stack: servers.Stack | None
) -> Iterator[Server]:
    """One micropacs serve process per test module, on fresh data."""
    running = start_server(tmp_path_factory.mktemp("pacs") / "data", env=isolated_env(shared_stack))
    yield running
    running.stop()


@pytest.fixture
def fresh_server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Server]:
    """A micropacs serve process of the test's own."""
    running = start_server(tmp_path / "data", env=server_env)
    yield running
    running.stop()
