"""The sockets of every association micropacs accepts or opens.

DCMTK and pynetdicom leave Nagle's algorithm on; then every DIMSE response
waits for the peer's delayed ACK, ~40 ms (ARCHITECTURE.md, "Performance facts").
And pynetdicom 3.0.4 closes a socket only when its ``shutdown()`` succeeds,
which it never does on a connection that was refused: every C-MOVE to an
unreachable destination leaked a file descriptor until garbage collection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle so each DIMSE message leaves at once."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            log.debug("could not set TCP_NODELAY")


NODELAY = (evt.EVT_CONN_OPEN, set_nodelay)
"""The binding that sets TCP_NODELAY, for ``evt_handlers`` of an AE or association."""


def _shutdown_and_close(self: Any) -> None:
    sock = self.socket
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def close_sockets_always() -> None:
    """Make pynetdicom close an association's socket even when ``shutdown()`` fails."""
    AssociationSocket._shutdown_socket = _shutdown_and_close  # type: ignore[method-assign]
