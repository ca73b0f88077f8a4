"""Which addresses a node may call from (micropacs.dimse.access), and the registry cache."""

from __future__ import annotations

import pytest

from micropacs.dimse.access import (
    NodeDirectory,
    Permission,
    RegistryUnavailable,
    Resolver,
    calls_from,
)
from micropacs.ports import Node

NETWORK_ONLY = Node("A", "10.0.0.5", 104, allowed_from=("10.1.0.0/16",), from_host=False)


@pytest.mark.parametrize(
    ("node", "peer", "allowed"),
    [
        (Node("A", "10.0.0.5", 104), "10.0.0.5", True),
        (Node("A", "10.0.0.5", 104), "10.0.0.6", False),
        (Node("A", "10.0.0.5", 104), "::ffff:10.0.0.5", True),  # a dual-stack socket's peer
        (Node("A", "localhost", 104), "127.0.0.1", True),
        (Node("A", "10.0.0.5", 104, allowed_from=("10.1.0.0/16",)), "10.1.200.3", True),
        (Node("A", "10.0.0.5", 104, allowed_from=("10.1.0.0/16",)), "10.2.0.1", False),
        (NETWORK_ONLY, "10.0.0.5", False),
        (NETWORK_ONLY, "10.1.0.1", True),
        (Node("A", "fd00::5", 104, allowed_from=("fd01::/64",)), "fd01::9", True),
        (Node("A", "no-such-host.invalid", 104), "127.0.0.1", False),
        (Node("A", "10.0.0.5", 104), "not an address", False),
    ],
)
def test_calls_from(node: Node, peer: str, allowed: bool) -> None:
    assert calls_from(node, peer, Resolver()) is allowed


def test_permissions_name_node_fields() -> None:
    node = Node("A", "h", 104, store=False, move_destination=False)
    granted = {permission for permission in Permission if permission.granted(node)}
    assert granted == {Permission.QUERY, Permission.RETRIEVE}


def test_the_directory_keeps_its_last_reading_when_the_registry_fails() -> None:
    readings: list[list[Node] | Exception] = [
        RuntimeError("down"),
        [Node("A", "h", 104)],
        RuntimeError("down again"),
    ]

    def load() -> list[Node]:
        reading = readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading

    directory = NodeDirectory(load, ttl=0.0)
    with pytest.raises(RegistryUnavailable):
        directory.nodes()
    assert directory.titles() == ["A"]
    assert list(directory.nodes()) == ["A"]  # the failed re-read keeps what was read
