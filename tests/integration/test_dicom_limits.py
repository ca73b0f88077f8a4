"""Bounded work per connection on the DICOM port: PDU sizes, times, pending connections,
associations per peer, and no received files left behind (ARCHITECTURE.md, "Security").

Each test attacks a real ``micropacs serve`` from raw sockets on loopback, bounded in
count and time, then checks the server still answers a C-ECHO.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from tests import dicomdata
from tests.integration.peers import Verification, association_request, echo, storescu
from tests.integration.server import Server, start_server

A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x07, 0x02, 0x03


def peak_rss_mb(server: Server) -> float:
    """The server's peak resident memory so far (VmHWM), MB."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU from ``sock`` (b"" if the server closed first)."""
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


@contextlib.contextmanager
def raw_association(server: Server, calling_ae: str = "ATTACKER") -> Iterator[socket.socket]:
    """A socket on which an association with ``server`` has been accepted."""
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(association_request(server.ae_title, calling_ae))
        answer = read_pdu(sock)
        assert answer[:1] == bytes([A_ASSOCIATE_AC]), answer[:10]
        yield sock


@pytest.fixture
def quick_server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Server]:
    """A server with 2 s ACSE and network timeouts, so a stalled peer is dropped quickly."""
    running = start_server(
        tmp_path / "data",
        env={
            **server_env,
            "MICROPACS_DICOM__ACSE_TIMEOUT": "2",
            "MICROPACS_DICOM__NETWORK_TIMEOUT": "2",
        },
    )
    yield running
    running.stop()


def test_a_claimed_100_mib_pdu_before_association_is_aborted_unbuffered(
    fresh_server: Server,
) -> None:
    before = peak_rss_mb(fresh_server)
    claimed = 100 << 20
    with socket.create_connection((fresh_server.host, fresh_server.dicom_port), timeout=10) as s:
        s.sendall(struct.pack(">BBL", 0x01, 0, claimed))  # an A-ASSOCIATE-RQ of 100 MiB
        megabyte = b"\x00" * (1 << 20)
        with contextlib.suppress(OSError):  # the server stops reading and closes
            for _ in range(100):
                s.sendall(megabyte)
    grown = peak_rss_mb(fresh_server) - before
    with socket.create_connection((fresh_server.host, fresh_server.dicom_port), timeout=10) as s:
        s.sendall(struct.pack(">BBL", 0x01, 0, claimed) + b"\x00" * 4096)
        answer = read_pdu(s)
    # A-ABORT, service provider, invalid-PDU-parameter-value (PS3.8 9.3.8)
    assert answer == bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert grown < 20, f"peak RSS grew {grown:.0f} MB for a claimed 100 MiB PDU"
    assert echo(fresh_server) == 0x0000


def test_p_data_longer_than_our_maximum_is_aborted(server: Server) -> None:
    with raw_association(server) as sock:
        # The server advertised 1 MiB (MICROPACS_DICOM__MAX_PDU's default); claim 2 MiB.
        sock.sendall(struct.pack(">BBL", 0x04, 0, 2 << 20) + b"\x00" * 4096)
        answer = read_pdu(sock)
    assert answer == bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert echo(server) == 0x0000


def closed_within(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock``; fails if it is still open after ``limit``."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept a stalled connection open for more than {limit} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_a_socket_stalled_inside_a_pdu_is_dropped_at_the_timeouts(quick_server: Server) -> None:
    server = quick_server
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as pending:
        request = association_request(server.ae_title, "ATTACKER")
        pending.sendall(request[:20])  # half an A-ASSOCIATE-RQ, then nothing
        assert closed_within(pending, 10) < 4  # ACSE timeout (ARTIM) 2 s
    with raw_association(server) as sock:
        sock.sendall(struct.pack(">BBL", 0x04, 0, 1000) + b"\x00" * 10)  # half a P-DATA-TF
        assert closed_within(sock, 10) < 4  # network timeout 2 s
    assert echo(server) == 0x0000


def test_64_stalled_sockets_do_not_lock_out_a_modality(
    fresh_server: Server, tmp_path: Path
) -> None:
    server = fresh_server  # default limits: 64 associations, ACSE timeout 30 s
    request = association_request(server.ae_title, "ATTACKER")
    stalled: list[socket.socket] = []
    try:
        for _ in range(64):
            sock = socket.create_connection((server.host, server.dicom_port), timeout=10)
            stalled.append(sock)
            sock.sendall(request[:20])
        time.sleep(0.5)  # every one accepted and stuck inside its PDU
        files = dicomdata.make_ct_series(tmp_path / "ct", 2, rows=64, cols=64)
        result = storescu(server, files)
        assert result.returncode == 0
        assert echo(server) == 0x0000
    finally:
        for sock in stalled:
            sock.close()


def rejection(answer: bytes) -> tuple[int, int, int]:
    assert answer[:1] == bytes([A_ASSOCIATE_RJ]), answer[:10]
    return answer[7], answer[8], answer[9]


def test_associations_per_calling_ae_and_per_address_are_capped(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    server = start_server(
        tmp_path / "data",
        env={
            **server_env,
            "MICROPACS_DICOM__MAX_ASSOCIATIONS_PER_CALLING_AE": "2",
            "MICROPACS_DICOM__MAX_ASSOCIATIONS_PER_ADDRESS": "3",
        },
    )
    try:
        with raw_association(server, "GREEDY"), raw_association(server, "GREEDY"):
            with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
                sock.sendall(association_request(server.ae_title, "GREEDY"))
                # rejected-transient, service-provider (presentation), local-limit-exceeded
                assert rejection(read_pdu(sock)) == (2, 3, 2)
            with (
                raw_association(server, "MODEST"),
                socket.create_connection((server.host, server.dicom_port), timeout=10) as s,
            ):
                s.sendall(association_request(server.ae_title, "THIRD"))
                assert rejection(read_pdu(s)) == (2, 3, 2)  # four from one address
        assert echo(server) == 0x0000  # the slots are given back
        assert '"msg": "association rejected: too many from this peer"' in server.log()
    finally:
        server.stop()


def test_any_called_ae_title_only_when_allowed(tmp_path: Path, server_env: dict[str, str]) -> None:
    server = start_server(
        tmp_path / "data", env={**server_env, "MICROPACS_DICOM__ACCEPT_ANY_CALLED_AE": "true"}
    )
    try:
        ae = AE(ae_title="ANYONE")
        ae.add_requested_context(Verification)
        assoc = ae.associate(server.host, server.dicom_port, ae_title="WHOEVER")
        assert assoc.is_established
        assoc.release()
    finally:
        server.stop()


def test_received_files_left_by_a_crash_are_swept_at_start(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    received = tmp_path / "data" / "tmp"
    received.mkdir(parents=True)
    leftover = received / "tmpa1b2c3"
    leftover.write_bytes(b"\x00" * 128 + b"DICM" + b"Crashed^Patient")
    (received / "part").mkdir()
    (received / "part" / "frame").write_bytes(b"Crashed^Patient")
    server = start_server(tmp_path / "data", env=server_env)
    try:
        assert list(received.iterdir()) == []
        # A second process on the same data directory (a worker) sweeps nothing.
        received_now = received / "in-flight"
        received_now.write_bytes(b"being received")
        second = start_server(tmp_path / "data", env=server_env, command=("run", "index"))
        second.stop()
        assert received_now.exists()
        assert echo(server) == 0x0000
    finally:
        server.stop()
