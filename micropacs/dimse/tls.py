"""DICOM TLS connections accepted (PS3.15 B.9) without letting one client stall the rest.

pynetdicom 3.0.4 wraps each accepted socket in the acceptor thread and does
the TLS handshake there, blocking and with no timeout: one client that
connects to the TLS port and sends nothing stopped every other connection
from being accepted, for ever. Here the acceptor only wraps the socket
(:func:`accept`, no I/O), and the connection's own thread does the handshake
(:func:`handshake`) with a deadline for the whole of it, however slowly the
client trickles its bytes. Until the handshake ends the connection counts as
pending (:mod:`~micropacs.dimse.admission`), so stalled handshakes cannot
take more than the pending cap either.

:func:`peer_fingerprint` names the certificate a caller presented, which
:mod:`~micropacs.dimse.access` compares with the one its node is bound to.
"""

from __future__ import annotations

import hashlib
import logging
import select
import socket
import ssl
import time
from typing import Any

from micropacs.tls import ServerTls

log = logging.getLogger(__name__)


def accept(listener: socket.socket, tls: ServerTls) -> tuple[socket.socket, Any]:
    """Accept one connection from ``listener``, wrapped for TLS but not yet shaken hands.

    Checks the certificate files first (at most once per reload interval), so a
    replaced certificate serves from the next connection on.
    """
    tls.refresh()
    connection, address = listener.accept()
    try:
        wrapped = tls.context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
    except (OSError, ValueError):
        connection.close()
        raise
    return wrapped, address


def handshake(connection: socket.socket, timeout: float, peer: Any = None) -> bool:
    """Complete the TLS handshake of an accepted ``connection`` within ``timeout`` seconds
    in all; returns whether it succeeded (if not, the caller closes the connection).

    A connection that is not TLS needs none and succeeds at once.
    """
    if not isinstance(connection, ssl.SSLSocket):
        return True
    previous = connection.gettimeout()
    deadline = time.monotonic() + timeout
    poller = select.poll()
    try:
        connection.setblocking(False)
        while True:
            try:
                connection.do_handshake()
                break
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("TLS handshake took too long")
            poller.register(connection, events)
            ready = poller.poll(remaining * 1000)
            poller.unregister(connection)
            if not ready:
                raise TimeoutError("TLS handshake took too long")
        connection.settimeout(previous)
    except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
        address = peer[0] if isinstance(peer, tuple) and peer else None
        log.warning(
            "DICOM TLS handshake failed",
            extra={"peer_address": address, "reason": _reason(exc)},
        )
        return False
    return True


def peer_fingerprint(assoc: Any) -> str | None:
    """The SHA-256 fingerprint (lowercase hex) of the verified certificate the peer of
    ``assoc`` presented on its TLS connection; None on a plain connection or without one.

    The server asks for client certificates only with a CA file, and then has
    already verified the chain against it in the handshake.
    """
    connection = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if not isinstance(connection, ssl.SSLSocket):
        return None
    try:
        der = connection.getpeercert(binary_form=True)
    except (OSError, ValueError):  # the connection closed meanwhile
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def _reason(exc: Exception) -> str:
    """The kind of failure, never peer-controlled text beyond OpenSSL's fixed reasons."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__
