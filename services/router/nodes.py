"""The node registry as the router sees it: read at most once per ``ttl`` seconds.

Rules match on the sender's AE group and forwards go to the address a destination has in
the registry; both are read from here. When a re-read fails the last good reading stays in
use, so a catalog hiccup does not stop routing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from micropacs.errors import MicropacsError, is_retryable
from micropacs.ports import Catalog, Node

log = logging.getLogger(__name__)


class NodeCache:
    """Every node by AE title, cached for ``ttl`` seconds."""

    def __init__(self, catalog: Catalog, ttl: float) -> None:
        self._catalog = catalog
        self._ttl = ttl
        self._read_at = -1e9
        self._nodes: dict[str, Node] | None = None

    async def nodes(self) -> Mapping[str, Node]:
        """The registry; raises the catalog's error if it was never read."""
        if time.monotonic() - self._read_at > self._ttl:
            try:
                self._nodes = {node.ae_title: node for node in await self._catalog.nodes()}
            except MicropacsError as exc:
                if self._nodes is None or not is_retryable(exc):
                    raise
                log.warning("node registry unreadable", extra={"reason": str(exc)})
            self._read_at = time.monotonic()
        assert self._nodes is not None
        return self._nodes

    async def node(self, ae_title: str) -> Node | None:
        """The node of ``ae_title``, None when the registry has none."""
        return (await self.nodes()).get(ae_title)

    async def group_of(self, ae_title: str) -> str:
        """The AE group of the node ``ae_title`` ("" when it is not registered)."""
        node = await self.node(ae_title)
        return node.ae_group if node is not None else ""

    def forget(self) -> None:
        """Read the registry again at the next use (an operator changed a node)."""
        self._read_at = -1e9
