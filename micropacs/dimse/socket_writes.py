"""Sending a run of P-DATA-TF PDUs as the pieces it was built from, in gathering writes.

A C-STORE request of a stored file is built as PDU headers between views of the file's
bytes (:func:`~micropacs.dimse.store_requests.file_runs`). Joining them into one byte
string copied every byte sent once more in Python, with the GIL held: a fifth of the
C-STORE SCU's Python time on CT images. On a plain TCP socket :func:`send_pieces` hands
them to the kernel as they are (``sendmsg``, at most ``IOV_MAX`` pieces per call);
over TLS (which has no gathering write), or where a handler of ``EVT_DATA_SENT`` wants
the bytes, they are joined and sent as pynetdicom sends.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any, Final

from pynetdicom import evt

IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16, 1024)
"""Pieces one ``sendmsg`` takes."""


def send_pieces(transport: Any, pieces: Sequence[bytes | memoryview]) -> None:
    """Send ``pieces`` in order on pynetdicom's ``AssociationSocket`` ``transport``; a
    failure closes the transport as pynetdicom's own send does (Evt17)."""
    raw = transport.socket
    if (
        not isinstance(raw, socket.socket)
        or isinstance(raw, ssl.SSLSocket)
        or transport.assoc.get_handlers(evt.EVT_DATA_SENT)
    ):
        transport.send(b"".join(pieces))
        return
    try:
        gather(raw, pieces)
    except Exception:  # noqa: BLE001 - as pynetdicom's AssociationSocket.send
        transport.event_queue.put("Evt17")


def gather(raw: socket.socket, pieces: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``pieces`` to ``raw``, resuming after partial writes."""
    views = [memoryview(piece).cast("B") for piece in pieces if len(piece)]
    first = 0
    while first < len(views):
        sent = raw.sendmsg(views[first : first + IOV_MAX])
        while sent:
            size = views[first].nbytes
            if sent >= size:
                sent -= size
                first += 1
            else:
                views[first] = views[first][sent:]
                sent = 0
