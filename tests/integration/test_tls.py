"""DICOM TLS (PS3.15 B.9, BCP 195) and HTTPS against ``micropacs serve``, with real peers.

The test makes its own PKI (a CA, server certificates for 127.0.0.1 and
localhost, a client certificate) and talks to the server with DCMTK's
``storescu +tls`` / ``findscu +tls``, pynetdicom with an ``ssl.SSLContext``,
httpx and raw sockets; C-MOVE destinations are pynetdicom storage SCPs with
and without TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydicom import dcmread
from pynetdicom import AE, evt

from micropacs.dimse.sockets import close_sockets_always
from micropacs.tls import RELOAD_INTERVAL
from tests import dicomdata
from tests.integration.peers import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    dcmtk,
    find_stored,
    free_port,
    study_identifier,
)
from tests.integration.server import Server, micropacs, start_server

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True, scope="module")
def _peers_close_their_sockets() -> None:
    # pynetdicom leaves a socket open when its shutdown() fails, as it does on every
    # connection the server refused; our in-process peers get micropacs' own fix.
    close_sockets_always()


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA and the certificates it issued."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_server_cert: Path  # the same names, another key and serial: a renewal
    other_server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # issued by a CA the server does not trust
    stranger_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _issue(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        # Our server certificate is also what we present on the associations we open.
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, stranger_ca_key = _key(), _key()
    ca = _issue("micropacs test CA", ca_key, None, ca=True)
    stranger_ca = _issue("another CA", stranger_ca_key, None, ca=True)
    _write(folder, "ca", ca, ca_key)
    for name, issuer, server in [
        ("server", (ca.subject, ca_key), True),
        ("other-server", (ca.subject, ca_key), True),
        ("client", (ca.subject, ca_key), False),
        ("stranger", (stranger_ca.subject, stranger_ca_key), False),
    ]:
        key = _key()
        _write(folder, name, _issue(name, key, issuer, server=server), key)
    return Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        other_server_cert=folder / "other-server.pem",
        other_server_key=folder / "other-server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.pem",
        stranger_key=folder / "stranger.key",
    )


@dataclass
class TlsServer:
    server: Server
    tls_port: int
    cert: Path  # the files the server reads, which a test may replace
    key: Path

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.server.http_port}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    folder = tmp_path_factory.mktemp("tls-pacs")
    cert, key = folder / "tls.crt", folder / "tls.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    env = {
        "MICROPACS_DICOM__TLS__PORT": "0",
        "MICROPACS_DICOM__TLS__CERT_FILE": str(cert),
        "MICROPACS_DICOM__TLS__KEY_FILE": str(key),
        "MICROPACS_DICOM__TLS__CA_FILE": str(pki.ca),
        "MICROPACS_HTTP__TLS__CERT_FILE": str(cert),
        "MICROPACS_HTTP__TLS__KEY_FILE": str(key),
        "MICROPACS_DICOM__ACSE_TIMEOUT": "3",
    }
    running = start_server(folder / "data", env=env)
    found = re.search(r"DICOM TLS on port (\d+)", running.log())
    assert found, running.log()
    yield TlsServer(running, int(found.group(1)), cert, key)
    running.stop()


def client_context(pki: Pki, *, cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def tls_associate(
    tls: TlsServer, context: ssl.SSLContext | None, contexts: list[str] | None = None
) -> Any:
    ae = AE(ae_title="PYTLS")
    for abstract in contexts or [Verification]:
        ae.add_requested_context(abstract)
    tls_args = (context, "127.0.0.1") if context is not None else None
    return ae.associate("127.0.0.1", tls.tls_port, ae_title=tls.server.ae_title, tls_args=tls_args)


def echo_over_tls(tls: TlsServer, pki: Pki) -> int:
    assoc = tls_associate(tls, client_context(pki))
    assert assoc.is_established, "no TLS association with micropacs"
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def tls_storescu(tls: TlsServer, pki: Pki, files: list[Path], *extra: str) -> None:
    dcmtk(
        "storescu",
        "+tls",
        str(pki.client_key),
        str(pki.client_cert),
        "+cf",
        str(pki.ca),
        "-aec",
        tls.server.ae_title,
        "-aet",
        "TLSSCU",
        *extra,
        "127.0.0.1",
        str(tls.tls_port),
        *map(str, files),
        timeout=60,
    )


def test_storescu_and_findscu_over_tls_with_client_certificates(
    tls_server: TlsServer, pki: Pki, tmp_path: Path
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 3, rows=64, cols=64)
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    tls_storescu(tls_server, pki, files)
    find_stored(tls_server.server, "IMAGE", 3, StudyInstanceUID=study)
    out = tmp_path / "found"
    out.mkdir()
    dcmtk(
        "findscu",
        "+tls",
        str(pki.client_key),
        str(pki.client_cert),
        "+cf",
        str(pki.ca),
        "-S",
        "-aec",
        tls_server.server.ae_title,
        "-X",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        "NumberOfStudyRelatedInstances",
        "127.0.0.1",
        str(tls_server.tls_port),
        timeout=60,
    )
    found = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert [int(ds.NumberOfStudyRelatedInstances) for ds in found] == [3]


def test_pynetdicom_over_tls_gets_tls_12_or_later_and_an_aead_suite(
    tls_server: TlsServer, pki: Pki
) -> None:
    assoc = tls_associate(tls_server, client_context(pki))
    assert assoc.is_established
    try:
        sock = assoc.dul.socket.socket
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        cipher = sock.cipher()
        assert cipher is not None
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
        assert sock.compression() is None
        assert int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()


def test_callers_without_a_trusted_certificate_are_refused(tls_server: TlsServer, pki: Pki) -> None:
    assert tls_associate(tls_server, client_context(pki, cert=False)).is_established is False
    stranger = ssl.create_default_context(cafile=str(pki.ca))
    stranger.load_cert_chain(pki.stranger_cert, pki.stranger_key)
    assert tls_associate(tls_server, stranger).is_established is False
    assert echo_over_tls(tls_server, pki) == 0x0000  # and the server still serves


def test_a_plain_text_association_on_the_tls_port_is_refused(
    tls_server: TlsServer, pki: Pki
) -> None:
    started = time.monotonic()
    assert tls_associate(tls_server, None).is_established is False
    assert time.monotonic() - started < 10
    assert echo_over_tls(tls_server, pki) == 0x0000


def test_tls_11_is_refused_by_the_server(tls_server: TlsServer, pki: Pki) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki.ca)
    old.load_cert_chain(pki.client_cert, pki.client_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point is to try it
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client is willing to offer it
    with (
        socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    # The server answered with a protocol_version alert: it, not this client, refused.
    assert "PROTOCOL_VERSION" in str(refused.value.reason)
    assert echo_over_tls(tls_server, pki) == 0x0000


def test_silent_connections_do_not_block_the_tls_acceptor(
    tls_server: TlsServer, pki: Pki, tmp_path: Path
) -> None:
    silent = [
        socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) for _ in range(3)
    ]
    try:
        files = dicomdata.make_ct_series(tmp_path / "ct", 1, rows=64, cols=64)
        started = time.monotonic()
        tls_storescu(tls_server, pki, files)
        assert time.monotonic() - started < 10
        # The handshake deadline (the ACSE timeout, 3 s here) closes each silent one.
        for sock in silent:
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    assert echo_over_tls(tls_server, pki) == 0x0000


def test_https_with_the_test_ca_and_no_plain_http(tls_server: TlsServer, pki: Pki) -> None:
    answer = httpx.get(f"{tls_server.https}/healthz", verify=client_context(pki), timeout=10)
    assert answer.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.server.http_port}/healthz", timeout=5)
    assert httpx.get(f"{tls_server.https}/healthz", verify=client_context(pki)).status_code == 200


def _serial_of(address: tuple[str, int], context: ssl.SSLContext) -> int:
    with (
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=address[0]) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_replaced_certificate_serves_new_connections_without_restart(
    tls_server: TlsServer, pki: Pki
) -> None:
    context = client_context(pki)
    dicom = ("127.0.0.1", tls_server.tls_port)
    http = ("127.0.0.1", tls_server.server.http_port)
    old = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).serial_number
    new = x509.load_pem_x509_certificate(pki.other_server_cert.read_bytes()).serial_number
    assert _serial_of(dicom, context) == old
    assert _serial_of(http, context) == old
    # Written as a deployment tool may: new files beside, renamed over the old ones, the
    # certificate first. Until its key arrives, the old pair must go on serving.
    staged_key, staged_cert = (
        tls_server.key.with_suffix(".new1"),
        tls_server.cert.with_suffix(".new2"),
    )
    staged_key.write_bytes(pki.other_server_key.read_bytes())
    staged_cert.write_bytes(pki.other_server_cert.read_bytes())
    staged_cert.replace(tls_server.cert)
    deadline = time.monotonic() + 2.5 * RELOAD_INTERVAL  # past two checks of the files
    while time.monotonic() < deadline:
        time.sleep(0.5)
        assert (_serial_of(dicom, context), _serial_of(http, context)) == (old, old)
    assert "TLS certificate not reloaded" in tls_server.server.log()
    staged_key.replace(tls_server.key)
    deadline = time.monotonic() + 15
    seen = (old, old)
    while time.monotonic() < deadline and seen != (new, new):
        time.sleep(0.5)
        seen = (_serial_of(dicom, context), _serial_of(http, context))
    assert seen == (new, new)
    assert echo_over_tls(tls_server, pki) == 0x0000


class StorageScp:
    """A pynetdicom storage SCP, with or without TLS, recording how each object came."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.received: list[tuple[str, bool]] = []  # (SOP Instance UID, over TLS)
        self.port = port
        ae = AE(ae_title="TLSDEST")
        ae.add_supported_context(CT_IMAGE_STORAGE, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self._ae = ae
        self._lock = threading.Lock()
        ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
            ssl_context=context,
        )

    def _store(self, event: evt.Event) -> int:
        transport: Any = event.assoc.dul.socket
        over_tls = isinstance(transport.socket, ssl.SSLSocket)
        request: Any = event.request
        with self._lock:
            self.received.append((str(request.AffectedSOPInstanceUID), over_tls))
        return 0x0000

    def stop(self) -> None:
        self._ae.shutdown()


def pymove(server: Server, study: str, destination: str) -> tuple[int, int]:
    """C-MOVE a study with pynetdicom; returns the final status and failed sub-operations."""
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(server.host, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    final, failed = -1, -1
    try:
        identifier = study_identifier(StudyInstanceUID=study)
        for status, _ in assoc.send_c_move(
            identifier, destination, StudyRootQueryRetrieveInformationModelMove
        ):
            assert status is not None, "C-MOVE timed out or aborted"
            if status.Status not in (0xFF00, 0xFF01):
                final = int(status.Status)
                failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
    finally:
        assoc.release()
    return final, failed


@pytest.fixture(scope="module")
def stored_study(tls_server: TlsServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    files = dicomdata.make_ct_series(tmp_path_factory.mktemp("move"), 2, rows=64, cols=64)
    dcmtk(
        "storescu",
        "-aec",
        tls_server.server.ae_title,
        "127.0.0.1",
        str(tls_server.server.dicom_port),
        *map(str, files),
    )
    datasets = [dcmread(p, stop_before_pixels=True) for p in files]
    find_stored(tls_server.server, "IMAGE", 2, StudyInstanceUID=datasets[0].StudyInstanceUID)
    return [datasets[0].StudyInstanceUID, *(str(ds.SOPInstanceUID) for ds in datasets)]


def _add_tls_node(server: Server, title: str, port: int) -> None:
    micropacs(
        "nodes", "add", title, "127.0.0.1", str(port), "--tls",
        data_dir=server.data_dir, env=server.env,
    )  # fmt: skip


def test_c_move_to_a_tls_node_goes_over_tls_with_our_certificate(
    tls_server: TlsServer, pki: Pki, stored_study: list[str]
) -> None:
    study, *instances = stored_study
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.other_server_cert, pki.other_server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # so micropacs must present its certificate
    scp = StorageScp(free_port(), context)
    try:
        _add_tls_node(tls_server.server, "TLSDEST", scp.port)
        time.sleep(1.2)  # the node registry is re-read at most once a second
        assert pymove(tls_server.server, study, "TLSDEST") == (0x0000, 0)
    finally:
        scp.stop()
    assert sorted(scp.received) == sorted((uid, True) for uid in instances)


def test_c_move_to_a_tls_node_that_speaks_plain_text_fails_without_sending(
    tls_server: TlsServer, stored_study: list[str]
) -> None:
    study, *instances = stored_study
    scp = StorageScp(free_port(), None)
    try:
        _add_tls_node(tls_server.server, "PLAINDEST", scp.port)
        time.sleep(1.2)
        final, failed = pymove(tls_server.server, study, "PLAINDEST")
    finally:
        scp.stop()
    assert (final, failed) == (0xA702, len(instances))
    assert scp.received == []
    assert "over TLS; nothing is sent in plain text" in tls_server.server.log()


def test_the_plain_port_still_serves(tls_server: TlsServer) -> None:
    ae = AE(ae_title="PLAIN")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(
        "127.0.0.1", tls_server.server.dicom_port, ae_title=tls_server.server.ae_title
    )
    assert assoc.is_established
    assoc.release()
