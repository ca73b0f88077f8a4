"""Who gets an association slot: pending connections and associations per peer.

pynetdicom counts every accepted connection against ``maximum_associations``
from the moment it is accepted, before its A-ASSOCIATE-RQ has arrived: 64
sockets that connect and send nothing (or half a PDU) locked every modality
out. So:

- :class:`PendingConnections` caps the connections still awaiting their
  A-ASSOCIATE-RQ (PS3.8 9.2, state Sta2); a new one beyond the cap closes the
  oldest, so the newest caller, a modality that sends its request at once,
  always gets in, and stalled sockets never hold more than the cap.
- :class:`PeerLimits` caps concurrent associations per peer address and per
  calling AE title, rejecting the excess with A-ASSOCIATE-RJ
  rejected-transient, service-provider (presentation related),
  local-limit-exceeded (PS3.8 9.3.4, table 9-21), as pynetdicom does at its
  global limit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt

log = logging.getLogger(__name__)

REJECTED_TRANSIENT, PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
"""An A-ASSOCIATE-RJ's result, source and diagnostic (PS3.8 9.3.4)."""


class PendingConnections:
    """The accepted connections whose A-ASSOCIATE-RQ has not yet arrived, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._sockets: dict[int, socket.socket] = {}  # oldest first; holding them keeps ids

    def __len__(self) -> int:
        return len(self._sockets)

    def admit(self, connection: socket.socket) -> None:
        """Record a connection just accepted, closing the oldest pending ones beyond the cap."""
        evicted: list[socket.socket] = []
        with self._lock:
            for key, known in list(self._sockets.items()):
                if known.fileno() == -1:  # closed without an event we saw
                    del self._sockets[key]
            while len(self._sockets) >= self._limit:
                evicted.append(self._sockets.pop(next(iter(self._sockets))))
            self._sockets[id(connection)] = connection
        for stalled in evicted:
            # Wakes its reader at once (end of stream); its association thread then ends.
            with contextlib.suppress(OSError):
                stalled.shutdown(socket.SHUT_RDWR)
        if evicted:
            log.warning("pending connections closed: too many awaiting an A-ASSOCIATE-RQ")

    def settled(self, connection: socket.socket | None) -> None:
        """Forget a connection whose request arrived, or which closed."""
        if connection is not None:
            with self._lock:
                self._sockets.pop(id(connection), None)


def _raw_socket(assoc: Any) -> socket.socket | None:
    wrapper = assoc.dul.socket
    return getattr(wrapper, "socket", None)


def on_requested(event: evt.Event, pending: PendingConnections) -> None:
    """EVT_REQUESTED handler: the connection is no longer pending."""
    pending.settled(_raw_socket(event.assoc))


def on_closed(event: evt.Event, pending: PendingConnections) -> None:
    """EVT_CONN_CLOSE handler: a connection that closed is no longer pending."""
    pending.settled(_raw_socket(event.assoc))


@dataclass
class PeerLimits:
    """Caps on concurrent associations from one address and one calling AE title."""

    per_address: int
    per_calling_ae: int

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: weakref.WeakSet[Any] = weakref.WeakSet()

    def check(self, event: evt.Event) -> None:
        """EVT_REQUESTED handler: reject the association beyond either cap."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None or assoc.is_rejected or assoc.is_aborted:
            return
        address, calling = assoc.requestor.address, str(request.calling_ae_title).strip()
        with self._lock:
            same_address = same_calling = 0
            for other in list(self._admitted):
                if (
                    not other.is_alive()
                    or other.is_rejected
                    or other.is_released
                    or other.is_aborted
                ):
                    self._admitted.discard(other)
                    continue
                same_address += other.requestor.address == address
                same_calling += _calling(other) == calling
            refused = same_address >= self.per_address or same_calling >= self.per_calling_ae
            if not refused:
                self._admitted.add(assoc)
        if refused:
            log.warning(
                "association rejected: too many from this peer",
                extra={"calling_ae": calling, "peer_address": address},
            )
            assoc.acse.send_reject(REJECTED_TRANSIENT, PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            evt.trigger(assoc, evt.EVT_REJECTED, {})  # counted and logged like every rejection
            assoc.kill()


def _calling(assoc: Any) -> str:
    request = assoc.requestor.primitive
    return str(request.calling_ae_title).strip() if request is not None else ""
