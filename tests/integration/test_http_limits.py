"""Bounded HTTP work against a running micropacs, attacked with raw sockets on loopback.

Slow headers, silent connections, oversized and stalled bodies, STOW-RS bodies with too
many parts or that take too long, too many connections, characters a header cannot
carry and a forged Host header. After each attack the server must still answer, hold
no received file in its temporary directory, and keep its memory.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from stack import servers
from tests import dicomdata
from tests.integration.conftest import isolated_env
from tests.integration.peers import find_stored, storescu
from tests.integration.server import Server, start_server

HEADER_TIMEOUT = 3.0
MAX_CONNECTIONS = 8
STOW_MAX_BYTES = 4 * 2**20
LIMITS = {
    "MICROPACS_HTTP__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "MICROPACS_HTTP__MAX_HEADER_BYTES": "4096",
    "MICROPACS_HTTP__MAX_BODY_BYTES": "1000",
    "MICROPACS_HTTP__IDLE_TIMEOUT": "1",
    "MICROPACS_HTTP__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "MICROPACS_HTTP__STOW_MAX_BYTES": str(STOW_MAX_BYTES),
    "MICROPACS_HTTP__STOW_MAX_PARTS": "2",
    "MICROPACS_HTTP__STOW_TIMEOUT": "2",
}
STOW = "/dicom-web/studies"
RSS_LIMIT = 400 * 2**20


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's temporary directory, where STOW-RS parts are received."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_dir: Path,
    shared_stack: servers.Stack | None,
) -> Iterator[Server]:
    """A server with small limits, so each attack reaches them in a bounded time."""
    env = {**isolated_env(shared_stack), **LIMITS, "TMPDIR": str(tmp_dir)}
    running = start_server(tmp_path_factory.mktemp("limits") / "data", env=env)
    yield running
    running.stop()


def rss(server: Server) -> int:
    """The server process's resident memory, bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def assert_alive(server: Server, tmp_dir: Path | None = None) -> None:
    """The server answers, keeps its memory and (given its tmp) holds no received part."""
    assert server.process.poll() is None
    assert httpx.get(f"{server.http}/healthz", timeout=5).status_code == 200
    assert rss(server) < RSS_LIMIT
    if tmp_dir is not None:
        assert [p.name for p in tmp_dir.iterdir() if p.name.startswith("stow-")] == []


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection((server.host, server.http_port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (readable with nothing, or reset)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, data: bytes, seconds: float) -> float | None:
    """Send ``data`` a byte every 0.1 s for up to ``seconds``; when the server closed."""
    started = time.monotonic()
    for byte in data * 1000:
        if time.monotonic() - started > seconds:
            return None
        if closed_by_peer(sock):
            return time.monotonic() - started
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, headers, body up to the close or its length)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def stow_head(boundary: str, extra: str) -> bytes:
    return (
        f"POST {STOW} HTTP/1.1\r\nHost: x\r\n"
        f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n'
        f"{extra}\r\n"
    ).encode()


def part(boundary: str, payload: bytes) -> bytes:
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + b"\r\n"


def test_headers_trickled_a_byte_at_a_time_are_cut_off(server: Server, tmp_dir: Path) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed_after = trickle(sock, b"X-Slow: abcdefghijklmnopqrstuvwxyz\r\n", 4 * HEADER_TIMEOUT)
    assert closed_after is not None, "a slow-loris client kept its connection"
    assert closed_after < HEADER_TIMEOUT + 2
    assert_alive(server, tmp_dir)


def test_the_next_request_on_a_kept_alive_connection_is_bounded_too(
    server: Server, tmp_dir: Path
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(sock)[0] == 200
        sock.settimeout(10)
        closed_after = trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 4 * HEADER_TIMEOUT)
    assert closed_after is not None
    assert closed_after < HEADER_TIMEOUT + 2
    assert_alive(server, tmp_dir)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.settimeout(4 * HEADER_TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 2
    assert_alive(server)


def test_headers_over_the_limit_are_refused(server: Server) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(big)  # whole: h11 parses it, the limit is ours
        status, headers, body = response(sock)
    assert status == 431
    assert headers["connection"] == "close"
    assert "4096" in json.loads(body)["error"]
    with connect(server) as sock:
        sock.sendall(big[:6000])  # incomplete: h11 stops buffering it
        assert response(sock)[0] == 400
    assert_alive(server)


def test_too_many_connections_get_503_then_service_resumes(server: Server) -> None:
    idle = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert response(sock)[0] == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.http}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the server never took requests again"
        time.sleep(0.1)
    assert_alive(server)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: Server, tmp_dir: Path
) -> None:
    for path, limit in (("/healthz", 1000), (STOW, STOW_MAX_BYTES)):
        with connect(server) as sock:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n\r\n"
            sock.sendall(head.encode())  # and not one byte of the body
            status, headers, body = response(sock)
        assert status == 413
        assert headers["connection"] == "close"
        assert str(limit) in json.loads(body)["error"]
    assert_alive(server, tmp_dir)


def test_a_chunked_stow_body_over_the_limit_is_cut_off(server: Server, tmp_dir: Path) -> None:
    boundary = uuid.uuid4().hex
    block = b"x" * 65536
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    with connect(server) as sock:
        sock.sendall(stow_head(boundary, "Transfer-Encoding: chunked\r\n"))
        first = part(boundary, b"")[:-2]
        sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        sent = 0
        try:
            while not select.select([sock], [], [], 0)[0]:
                assert sent < 4 * STOW_MAX_BYTES, "the server read past its limit"
                sock.sendall(chunk)
                sent += len(block)
            status, _, body = response(sock)
        except (ConnectionResetError, BrokenPipeError):
            # The server answered 413 and closed while our bytes were still arriving: the
            # kernel's reset may drop the answer before we read it. It stopped reading, though.
            status, body = None, b""
    if status is not None:
        assert status == 413
        assert "larger than" in json.loads(body)["error"]
    assert sent >= STOW_MAX_BYTES
    assert_alive(server, tmp_dir)


def test_a_stalled_body_gets_408_and_leaves_no_file(server: Server, tmp_dir: Path) -> None:
    boundary = uuid.uuid4().hex
    with connect(server) as sock:
        sock.sendall(stow_head(boundary, "Content-Length: 100000\r\n"))
        sock.sendall(part(boundary, b"some bytes of an instance"))
        started = time.monotonic()
        status, _, body = response(sock)
    assert status == 408
    assert time.monotonic() - started < 5
    assert json.loads(body)["error"]
    assert_alive(server, tmp_dir)


def test_a_stow_body_that_takes_too_long_in_total_gets_408(server: Server, tmp_dir: Path) -> None:
    boundary = uuid.uuid4().hex
    with connect(server) as sock:
        sock.sendall(stow_head(boundary, "Content-Length: 100000\r\n"))
        sock.sendall(part(boundary, b"DICM"))
        started = time.monotonic()
        while not select.select([sock], [], [], 0.3)[0]:  # never idle for a second
            assert time.monotonic() - started < 10, "the body was never cut off"
            sock.sendall(b"x")
        status, _, body = response(sock)
    assert status == 408
    assert "longer than" in json.loads(body)["error"]
    assert_alive(server, tmp_dir)


def test_too_many_parts_get_413_and_leave_no_file(
    server: Server, tmp_dir: Path, tmp_path: Path
) -> None:
    files = dicomdata.make_study(tmp_path, 3, "CT")
    boundary = uuid.uuid4().hex
    body = b"".join(part(boundary, f.read_bytes()) for f in files) + f"--{boundary}--\r\n".encode()
    answer = httpx.post(
        f"{server.http}{STOW}",
        content=body,
        headers={
            "content-type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )
    assert answer.status_code == 413
    assert "more than 2 parts" in answer.json()["error"]
    assert_alive(server, tmp_dir)


@pytest.mark.parametrize("name", ["é", "\u2603", "Patient\u00e9Name"])
def test_a_parameter_name_no_header_can_carry_gets_400(server: Server, name: str) -> None:
    answer = httpx.get(f"{server.http}/dicom-web/studies", params={name: "1"})
    assert answer.status_code == 400
    assert name in answer.json()["error"]  # the reason names it, in the body
    assert answer.headers["warning"].isascii()
    assert name not in answer.headers["warning"]
    assert_alive(server)


def test_retrieve_urls_ignore_a_forged_host_header(server: Server, tmp_path: Path) -> None:
    (path,) = dicomdata.make_study(tmp_path, 1, "CT")
    boundary = uuid.uuid4().hex
    body = part(boundary, path.read_bytes()) + f"--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    forged = {"host": "evil.example:666"}
    stored = httpx.post(
        f"{server.http}{STOW}", content=body, headers={**forged, "content-type": content_type}
    )
    assert stored.status_code == 200
    (item,) = stored.json()["00081199"]["Value"]
    assert item["00081190"]["Value"][0].startswith(f"{server.http}/dicom-web/studies/")
    study = dcmread(path).StudyInstanceUID
    find_stored(server, "STUDY", 1, StudyInstanceUID=study)
    found = httpx.get(
        f"{server.http}/dicom-web/studies", params={"StudyInstanceUID": study}, headers=forged
    )
    (match,) = found.json()
    assert match["00081190"]["Value"][0] == f"{server.http}/dicom-web/studies/{study}"
    metadata = httpx.get(f"{server.http}/dicom-web/studies/{study}/metadata", headers=forged)
    (record,) = metadata.json()
    assert record["7FE00010"]["BulkDataURI"].startswith(f"{server.http}/dicom-web/studies/")
    assert_alive(server)


def test_the_configured_public_url_is_used(tmp_path: Path, server_env: dict[str, str]) -> None:
    public = "https://pacs.example.org/archive"
    running = start_server(
        tmp_path / "data", env={**server_env, "MICROPACS_HTTP__PUBLIC_URL": public + "/"}
    )
    try:
        (path,) = dicomdata.make_study(tmp_path / "ct", 1, "CT")
        boundary = uuid.uuid4().hex
        body = part(boundary, path.read_bytes()) + f"--{boundary}--\r\n".encode()
        stored = httpx.post(
            f"{running.http}{STOW}",
            content=body,
            headers={
                "content-type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
        )
        (item,) = stored.json()["00081199"]["Value"]
        assert item["00081190"]["Value"][0].startswith(f"{public}/dicom-web/studies/")
        study = dcmread(path).StudyInstanceUID
        find_stored(running, "STUDY", 1, StudyInstanceUID=study)
        (match,) = httpx.get(f"{running.http}/dicom-web/studies").json()
        assert match["00081190"]["Value"][0] == f"{public}/dicom-web/studies/{study}"
        (record,) = httpx.get(f"{running.http}/dicom-web/studies/{study}/metadata").json()
        assert record["7FE00010"]["BulkDataURI"].startswith(f"{public}/dicom-web/studies/")
    finally:
        running.stop()


def test_a_client_that_stops_reading_is_cut_off(
    server: Server, tmp_dir: Path, tmp_path: Path
) -> None:
    cine = dicomdata.us_multiframe(frames=40)  # 9 MB, more than the socket buffers hold
    path = tmp_path / "cine.dcm"
    cine.save_as(path, enforce_file_format=True)
    storescu(server, [path])
    study = cine.StudyInstanceUID
    find_stored(server, "STUDY", 1, StudyInstanceUID=study)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server's buffer fills
    with sock:
        sock.connect((server.host, server.http_port))
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        request = f"GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
        sock.sendall(request.encode())
        time.sleep(4)  # reading nothing, for longer than the idle timeout
        received, cut_off = 0, False
        sock.settimeout(8)
        try:
            while chunk := sock.recv(65536):
                received += len(chunk)
            cut_off = True
        except ConnectionResetError:
            cut_off = True
        except TimeoutError:  # still open: the whole answer came, then keep-alive
            pass
    assert cut_off
    assert received < path.stat().st_size
    assert_alive(server, tmp_dir)
