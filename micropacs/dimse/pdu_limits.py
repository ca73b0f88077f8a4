"""Reading PDUs with bounds on their size and on the time they take to arrive.

pynetdicom 3.0.4 reads the 6-byte PDU header (PS3.8 9.3.1), then blocks on a
socket with no timeout until the whole claimed length has arrived, growing a
buffer as it goes: a peer that claims 100 MiB before any association makes
the server hold 200 MB, and one that stops sending inside a PDU keeps its
threads, and an association slot, forever. An unknown PDU type got no answer.

:func:`read_pdu` replaces its ``DULServiceProvider._read_pdu_data`` (installed
once per process by :func:`install`) and:

- refuses, with an A-ABORT (PS3.8 9.3.8, source service-provider) and a
  close, a PDU of unknown type (reason unrecognized-PDU), any PDU before the
  association is established or any PDU but P-DATA-TF longer than
  :data:`ASSOCIATION_PDU_LIMIT`, and a P-DATA-TF longer than the Maximum
  Length we advertised (PS3.8 D.1) plus a header (reason
  invalid-PDU-parameter-value);
- gives a connection until its ARTIM timer (the ACSE timeout) expires to
  deliver its whole A-ASSOCIATE-RQ, and an established association the
  network timeout for each MiB of a PDU, no read ever waiting longer;
- when a connection ends before its A-ASSOCIATE-RQ, wakes the association
  thread at once instead of letting it wait out the ACSE timeout.

The work per P-DATA PDU is one buffer allocated at its announced size and
filled with as few ``recv_into`` calls as the kernel allows (pynetdicom reads
4 KiB at a time), plus one comparison per call for the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Any, Final

from pynetdicom.dul import DULServiceProvider

from micropacs.dimse import reactor_guard

ASSOCIATION_PDU_LIMIT: Final = 64 * 1024
"""Longest A-ASSOCIATE, A-RELEASE or A-ABORT PDU accepted, bytes after the header.
A request with 128 presentation contexts and a User Identity token is far shorter."""

P_DATA_TF: Final = 0x04
HEADER: Final = 6
UNRECOGNIZED_PDU, INVALID_PDU_PARAMETER_VALUE = 0x01, 0x06
"""A-ABORT reasons of the service provider (PS3.8 9.3.8, table 9-26)."""

_SERVICE_PROVIDER: Final = 0x02
_KNOWN_TYPES: Final = frozenset(range(0x01, 0x08))
# Before the A-ASSOCIATE-AC: idle, awaiting the RQ, our answer, the connection or the AC.
_NEGOTIATING: Final = frozenset({"Sta1", "Sta2", "Sta3", "Sta4", "Sta5"})
_MIB_SHIFT: Final = 20
_DRAIN_BYTES, _DRAIN_SECONDS = 4 << 20, 1.0
_P_DATA_LIMIT = "_micropacs_p_data_limit"
_UNLIMITED: Final = 1 << 32


def abort_pdu(reason: int) -> bytes:
    """An A-ABORT PDU from the service provider with ``reason`` (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, _SERVICE_PROVIDER, reason)


def read_pdu(dul: DULServiceProvider) -> None:
    """Read one PDU from ``dul``'s socket and queue its state machine event (PS3.8 9.2)."""
    raw = dul.socket.socket if dul.socket is not None else None
    if raw is None:
        return
    state = dul.state_machine.current_state
    if state == "Sta1":
        return  # the connection's own event (Evt5) goes first: read once in Sta2
    if state == "Sta13":
        _discard(dul, raw)  # we aborted and await the close: what follows is not read
        return
    negotiating = state in _NEGOTIATING
    if negotiating:
        artim = dul.artim_timer.remaining if state == "Sta2" else dul.assoc.acse_timeout
        deadline = time.monotonic() + (artim if artim is not None else 30.0)
    else:
        deadline = time.monotonic() + (dul.network_timeout or 60.0)
    header = bytearray(HEADER)
    try:
        if _fill(raw, header, 0, deadline, negotiating) < HEADER:
            _closed(dul, state)
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in _KNOWN_TYPES:
            _refuse(dul, raw, state, UNRECOGNIZED_PDU)
            return
        if length > _limit(dul, pdu_type, negotiating):
            _refuse(dul, raw, state, INVALID_PDU_PARAMETER_VALUE)
            return
        if not negotiating:
            deadline += (dul.network_timeout or 60.0) * (length >> _MIB_SHIFT)
        pdu = bytearray(HEADER + length)
        pdu[:HEADER] = header
        if _fill(raw, pdu, HEADER, deadline, negotiating) < len(pdu):
            _closed(dul, state)
            return
        if negotiating:
            raw.settimeout(dul.network_timeout)  # from now on a read waits for silence only
    except OSError:  # a timeout, a reset, or a socket closed under us
        _closed(dul, state)
        return
    try:
        decoded, event = dul._decode_pdu(pdu)
        # The state machine's next step; failing there would kill the reactor thread.
        decoded.to_primitive()
    except Exception:  # noqa: BLE001 - as pynetdicom: whatever fails to decode is invalid
        dul.event_queue.put("Evt19")  # Unrecognized or invalid PDU: the FSM aborts
        _wake(dul, state)
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(decoded)


def _fill(raw: socket.socket, buffer: bytearray, start: int, deadline: float, exact: bool) -> int:
    """Fill ``buffer`` from ``start``; returns how far it got (short: the peer closed).

    With ``exact`` each read waits only until ``deadline``; otherwise each waits
    at most the socket's timeout and the deadline is checked between reads.
    """
    view = memoryview(buffer)
    got, total = start, len(buffer)
    while got < total:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if exact:
            raw.settimeout(remaining)
        count = raw.recv_into(view[got:])
        if not count:
            break
        got += count
    return got


def _limit(dul: DULServiceProvider, pdu_type: int, negotiating: bool) -> int:
    if negotiating or pdu_type != P_DATA_TF:
        return ASSOCIATION_PDU_LIMIT
    limit: int | None = dul.__dict__.get(_P_DATA_LIMIT)
    if limit is None:
        assoc = dul.assoc
        ours = assoc.acceptor if assoc.is_acceptor else assoc.requestor
        advertised = ours.maximum_length or 0
        limit = advertised + HEADER if advertised else _UNLIMITED
        dul.__dict__[_P_DATA_LIMIT] = limit
    return limit


def _refuse(dul: DULServiceProvider, raw: socket.socket, state: str, reason: int) -> None:
    """Answer A-ABORT, let the peer read it (our FIN after it, its data drained a
    little so the close sends no reset), then close through the state machine."""
    with contextlib.suppress(OSError):
        raw.settimeout(_DRAIN_SECONDS)
        raw.sendall(abort_pdu(reason))
        raw.shutdown(socket.SHUT_WR)
        drained, deadline = 0, time.monotonic() + _DRAIN_SECONDS
        while drained < _DRAIN_BYTES and time.monotonic() < deadline:
            chunk = raw.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    _closed(dul, state)


def _closed(dul: DULServiceProvider, state: str) -> None:
    dul.event_queue.put("Evt17")  # Transport connection closed
    _wake(dul, state)


def _wake(dul: DULServiceProvider, state: str) -> None:
    if state == "Sta2" and dul.assoc.is_acceptor:
        # The association thread waits for an A-ASSOCIATE primitive: None ends that wait.
        queue: Any = dul.to_user_queue
        queue.put(None)


def _discard(dul: DULServiceProvider, raw: socket.socket) -> None:
    try:
        raw.settimeout(_DRAIN_SECONDS)
        if raw.recv(65536):
            return
    except OSError:
        pass
    dul.event_queue.put("Evt17")


def install() -> None:
    """Make every pynetdicom association read its PDUs with :func:`read_pdu`, and end
    rather than crash on what else a peer sends wrong (:mod:`.reactor_guard`)."""
    DULServiceProvider._read_pdu_data = read_pdu  # type: ignore[method-assign, assignment]
    reactor_guard.install()
