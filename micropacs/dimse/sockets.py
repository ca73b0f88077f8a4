"""Socket options of every association micropacs accepts or opens.

DCMTK and pynetdicom leave Nagle's algorithm on; then every DIMSE response
waits for the peer's delayed ACK, ~40 ms (ARCHITECTURE.md, "Performance facts").
"""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt

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
