"""Waiting out PyMongo's server checks, so that closing a client leaves no socket open.

``AsyncMongoClient.close()`` cancels each server monitor wherever it is, and a
monitor cancelled while it opens its socket never closes that socket (PyMongo
4.20; PYTHON-5867): garbage collection reports it unclosed later, anywhere.
Closing right after a failed server selection hits that about every other time,
because the selection gives up on the same 500 ms tick on which the monitor
starts its next attempt. The heartbeat events say when a check that may be
connecting is under way, so :meth:`MonitorChecks.settled` lets the caller close
between checks.
"""

from __future__ import annotations

import asyncio
import time

from pymongo import monitoring

SETTLE = 0.01
"""How long no check may run before the monitors count as idle: one more turn of the
event loop, so that a check already due starts (and is waited for) instead of being
cut off at its socket."""


class MonitorChecks(monitoring.ServerHeartbeatListener):
    """The servers whose monitor is checking them on a connection it may be opening.

    Awaited (streaming) heartbeats are left out: they read from a connection that is
    already open, which closing the client closes.
    """

    def __init__(self) -> None:
        self._checking: set[object] = set()

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        """A check began."""
        if not event.awaited:
            self._checking.add(event.connection_id)

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        """A check ended with an answer."""
        self._checking.discard(event.connection_id)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        """A check ended without one (the server is down or unreachable)."""
        self._checking.discard(event.connection_id)

    async def settled(self, at_most: float) -> None:
        """Return once no check has been under way for :data:`SETTLE` seconds, or after
        ``at_most`` seconds (a check that long is a connect to a host that never answers)."""
        deadline = time.monotonic() + at_most
        while time.monotonic() < deadline:
            idle = not self._checking
            await asyncio.sleep(SETTLE)
            if idle and not self._checking:
                return
