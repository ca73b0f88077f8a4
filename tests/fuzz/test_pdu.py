"""Fuzzing the PDUs micropacs receives (PS3.8 9.3): decoded as its reader hands them over,
and sent to a running micropacs over a loopback socket.

What micropacs relies on (:mod:`micropacs.dimse.pdu_limits`): a PDU of an
unknown type or over the limits is refused before it is read; a PDU that
fails to decode is an invalid PDU (Evt19), and the association is aborted.
Everything pynetdicom does with a decoded PDU afterwards (``to_primitive``,
the DIMSE decoding of P-DATA) runs in the state machine, where an exception
kills the association's reactor thread; so whatever decodes must go through
those steps without raising.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import strategies as st
from pynetdicom.association import Association
from pynetdicom.dul import _PDU_TYPES, DULServiceProvider

from micropacs.dimse import pdu_limits
from tests.fuzz import seeds
from tests.fuzz.conftest import fuzz
from tests.fuzz.mutation import inputs, mutated
from tests.service.conftest import Running
from tests.service.peers import echo

AE_TITLE = "MICROPACS"
SEEDS = seeds.pdus(AE_TITLE)


def as_read(data: bytes) -> bytes | None:
    """The PDU :func:`pdu_limits.read_pdu` would hand to pynetdicom from a peer that sent
    ``data`` (its declared length made to fit what was sent), or None if it refuses it."""
    if len(data) < pdu_limits.HEADER:
        return None
    pdu_type, _, length = struct.unpack(">BBL", data[: pdu_limits.HEADER])
    if bytes([pdu_type]) not in _PDU_TYPES:
        return None
    length = min(length, len(data) - pdu_limits.HEADER)
    if length > pdu_limits.ASSOCIATION_PDU_LIMIT and pdu_type != pdu_limits.P_DATA_TF:
        return None
    header = struct.pack(">BBL", pdu_type, data[1], length)
    return header + data[pdu_limits.HEADER : pdu_limits.HEADER + length]


def decode_as_read(pdu: bytes) -> None:
    """Decode ``pdu`` as :func:`pdu_limits.read_pdu` does (``_decode_pdu``, then the
    primitive the state machine takes), in bounded time and memory; any exception there
    is an invalid PDU (Evt19: the association is aborted)."""
    pdu_class, _ = _PDU_TYPES[pdu[0:1]]
    decoded = pdu_class()
    with contextlib.suppress(Exception):
        decoded.decode(pdu)
        decoded.to_primitive()


def check_pdu(data: bytes) -> None:
    pdu = as_read(data)
    if pdu is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # in a server they are logged, not raised
        decode_as_read(pdu)


def test_pdus_decode_or_are_refused() -> None:
    fuzz("pdu decode", inputs(SEEDS, max_random=1024), check_pdu, weight=3)


# ------------------------------------------------------------------ over the network

READ_TIMEOUT = 5.0
"""Seconds to wait for the server to close after one attack (it answers or closes at once;
one still open is found by :class:`Alive`)."""
BATCH = 25
"""Attacks between two checks that the server still answers a C-ECHO."""


def drain(sock: socket.socket) -> bytes:
    """What the server sends until it closes, at most :data:`READ_TIMEOUT` seconds."""
    sock.settimeout(READ_TIMEOUT)
    received = b""
    deadline = time.monotonic() + READ_TIMEOUT
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def answer_timeout(pacs: Running) -> float:
    """Seconds the server may take to answer an A-ASSOCIATE-RQ: its ACSE timeout (its
    ARTIM timer closes the connection then, PS3.8 9.1.5), and a little more, so that a
    server starved of CPU on a loaded machine is not taken for one that refused."""
    return pacs.settings.dicom.acse_timeout + READ_TIMEOUT


def read_answer(sock: socket.socket, timeout: float = READ_TIMEOUT) -> bytes:
    """One PDU from the server (short, b"" at worst, if it closed or reset first);
    TimeoutError if it sent no whole PDU and did not close within ``timeout`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionError):
        while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


@contextlib.contextmanager
def connection(pacs: Running) -> Iterator[socket.socket]:
    with socket.create_connection((pacs.host, pacs.port), timeout=READ_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield sock


def attack(pacs: Running, before: bytes, pdus: list[bytes]) -> None:
    """Send ``before`` (an A-ASSOCIATE-RQ, or nothing), then ``pdus``, then close our side."""
    with connection(pacs) as sock:
        if before:
            sock.sendall(before)
            start, timeout = time.monotonic(), answer_timeout(pacs)
            try:
                answer = read_answer(sock, timeout)
            except TimeoutError:
                raise AssertionError(f"association request unanswered for {timeout} s") from None
            waited = time.monotonic() - start
            assert answer[:1] == b"\x02", (
                f"association not accepted (answer after {waited:.1f} s): {answer[:16]!r}"
            )
        with contextlib.suppress(OSError):  # the server may abort and close half-way
            for pdu in pdus:
                sock.sendall(pdu)
            sock.shutdown(socket.SHUT_WR)
        drain(sock)


class Alive:
    """Checks after every :data:`BATCH` attacks that ``pacs`` answers a C-ECHO, that
    no association it accepted is left running and that none left a file behind."""

    def __init__(self, pacs: Running) -> None:
        self.pacs = pacs
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count % BATCH == 0:
            self.check()

    def check(self) -> None:
        assert echo(self.pacs) == 0x0000
        deadline = time.monotonic() + 10
        while self.pacs_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.pacs_associations(), "associations left running after their peers left"
        assert self.pacs.leftovers() == [], "files left in the data directory by the last attacks"

    def pacs_associations(self) -> list[threading.Thread]:
        """The association and reactor threads of associations micropacs accepted."""
        return [
            t
            for t in threading.enumerate()
            if (isinstance(t, Association) and t.is_acceptor)
            or (isinstance(t, DULServiceProvider) and t.assoc.is_acceptor)
        ]


@pytest.fixture(scope="module")
def alive(fuzz_pacs: Running) -> Iterator[Alive]:
    checker = Alive(fuzz_pacs)
    yield checker
    checker.check()
    assert fuzz_pacs.leftovers() == []


RANDOM_PDU = st.binary(min_size=6, max_size=256).map(
    lambda b: b[:2] + struct.pack(">L", len(b) - 6) + b[6:]
)
PDU_ATTACK = st.lists(
    st.one_of(mutated(SEEDS), RANDOM_PDU, st.sampled_from(SEEDS)), min_size=1, max_size=4
)


def test_a_running_micropacs_survives_random_pdus_before_association(
    fuzz_pacs: Running, alive: Alive
) -> None:
    def check(pdus: list[bytes]) -> None:
        attack(fuzz_pacs, b"", pdus)

    fuzz("pdu network, no association", PDU_ATTACK, check, weight=0.5, after=alive)


def test_a_running_micropacs_survives_random_pdus_in_an_association(
    fuzz_pacs: Running, alive: Alive
) -> None:
    request = seeds.association_request(fuzz_pacs.ae_title)

    def check(pdus: list[bytes]) -> None:
        attack(fuzz_pacs, request, pdus)

    fuzz("pdu network, in association", PDU_ATTACK, check, weight=0.5, after=alive)
