"""Letting a peer's messages in while an SCP streams responses to it.

pynetdicom's DUL thread sends one queued PDU *or* reads one per loop, and
sends first. A C-FIND SCP that queues its Pending responses faster than they
leave therefore never reads the peer's C-CANCEL (PS3.7 9.1.2.1.7: the SCP
stops and answers Cancel), and holds every queued response in memory. Before
each response the handler waits here until the queue is short and whatever
the peer sent has been read.
"""

from __future__ import annotations

import select
import time
from typing import Any

MAX_QUEUED = 32
"""Outgoing PDUs an association may hold before its producer waits."""


def wait_for_peer(assoc: Any, *, max_queued: int = MAX_QUEUED, timeout: float = 5.0) -> None:
    """Block (at most ``timeout`` seconds) until ``assoc`` holds at most ``max_queued``
    outgoing PDUs and has read everything the peer sent."""
    dul = assoc.dul
    deadline = time.monotonic() + timeout
    while assoc.is_established and time.monotonic() < deadline:
        if dul.to_provider_queue.qsize() <= max_queued and not _unread(dul):
            return
        time.sleep(0.0005)


def _unread(dul: Any) -> bool:
    """Whether the peer sent something the DUL has not read and handled yet."""
    if not dul.event_queue.empty():
        return True
    sock = getattr(dul.socket, "socket", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)
