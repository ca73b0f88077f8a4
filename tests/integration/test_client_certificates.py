"""TLS client certificates bound to nodes (PS3.15 B.9) against a real ``micropacs serve``
(docs/security.md, "Client certificates bound to nodes").

The test PKI of test_tls.py issues every certificate: a node bound to one of
them must present it; another certificate of the same trusted CA, or the
plain port, is rejected calling-AE-title-not-recognized. Peers are pynetdicom
with an ``ssl.SSLContext`` and DCMTK's ``storescu +tls``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE

from micropacs.dimse.sockets import close_sockets_always
from tests import dicomdata
from tests.integration.peers import Verification, associate_or_rejection, dcmtk, free_port
from tests.integration.server import Server, micropacs, start_server
from tests.integration.test_tls import Pki, pki  # noqa: F401 - the test PKI fixture

CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
"""Rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 9.3.4)."""


@pytest.fixture(autouse=True, scope="module")
def _peers_close_their_sockets() -> None:
    close_sockets_always()  # pynetdicom leaves refused sockets open otherwise


def fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


@dataclass
class Site:
    server: Server
    tls_port: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Site]:  # noqa: F811
    folder = tmp_path_factory.mktemp("cert-pacs")
    env = {
        "MICROPACS_DICOM__TLS__PORT": "0",
        "MICROPACS_DICOM__TLS__CERT_FILE": str(pki.server_cert),
        "MICROPACS_DICOM__TLS__KEY_FILE": str(pki.server_key),
        "MICROPACS_DICOM__TLS__CA_FILE": str(pki.ca),
    }
    server = start_server(folder / "data", env=env)
    found = re.search(r"DICOM TLS on port (\d+)", server.log())
    assert found, server.log()
    # Bound by the PEM file; by the fingerprint as `openssl x509 -fingerprint -sha256` prints it.
    other = fingerprint(pki.other_server_cert).upper()
    for title, options in [
        ("CERT_CT", ("--tls-certificate", str(pki.client_cert))),
        ("CERT_FP", ("--tls-certificate", ":".join(re.findall("..", other)))),
        ("NO_CERT", ()),
    ]:
        micropacs(
            "nodes", "add", title, "127.0.0.1", str(free_port()), *options,
            data_dir=server.data_dir, env=server.env,
        )  # fmt: skip
    time.sleep(1.2)  # the node registry is re-read at most once a second
    yield Site(server, int(found.group(1)))
    server.stop()


def context_with(pki: Pki, cert: Path, key: Path) -> ssl.SSLContext:  # noqa: F811
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(cert, key)
    return context


def answer(site: Site, calling: str, context: ssl.SSLContext | None) -> Any:
    """None when accepted (a C-ECHO then succeeds), else (result, source, diagnostic)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    port = site.tls_port if context is not None else site.server.dicom_port
    tls_args = (context, "127.0.0.1") if context is not None else None
    assoc, rejected = associate_or_rejection(
        ae, "127.0.0.1", port, ae_title=site.server.ae_title, tls_args=tls_args
    )
    if assoc.is_established:
        try:
            assert int(assoc.send_c_echo().Status) == 0x0000
        finally:
            assoc.release()
        return None
    assert rejected is not None, "neither accepted nor rejected"
    return rejected


def test_a_node_bound_to_a_certificate_must_present_it(site: Site, pki: Pki) -> None:  # noqa: F811
    client = context_with(pki, pki.client_cert, pki.client_key)
    other = context_with(pki, pki.other_server_cert, pki.other_server_key)
    assert answer(site, "CERT_CT", client) is None
    # Another certificate of the same trusted CA does not do, nor does the plain port.
    assert answer(site, "CERT_CT", other) == CALLING_AE_NOT_RECOGNIZED
    assert answer(site, "CERT_CT", None) == CALLING_AE_NOT_RECOGNIZED
    assert answer(site, "CERT_FP", other) is None
    assert answer(site, "CERT_FP", client) == CALLING_AE_NOT_RECOGNIZED
    # A node bound to no certificate is checked as before, on either port.
    assert answer(site, "NO_CERT", other) is None
    assert answer(site, "NO_CERT", None) is None
    assert "without its TLS client certificate" in site.server.log()


def test_storescu_over_tls_with_the_bound_certificate_only(
    site: Site,
    pki: Pki,  # noqa: F811
    tmp_path: Path,
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)

    def storescu(cert: Path, key: Path) -> Any:
        return dcmtk(
            "storescu", "+tls", str(key), str(cert), "+cf", str(pki.ca),
            "-aec", site.server.ae_title, "-aet", "CERT_CT",
            "127.0.0.1", str(site.tls_port), *map(str, files),
            timeout=60, check=False,
        )  # fmt: skip

    assert storescu(pki.client_cert, pki.client_key).returncode == 0
    refused = storescu(pki.other_server_cert, pki.other_server_key)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert answer(site, "CERT_CT", context_with(pki, pki.client_cert, pki.client_key)) is None


def test_nodes_add_refuses_what_is_no_certificate(site: Site, tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for given in ["ab" * 31, "zz" * 32, str(not_pem)]:
        added = micropacs(
            "nodes", "add", "BAD_CERT", "127.0.0.1", "104", "--tls-certificate", given,
            data_dir=site.server.data_dir, env=site.server.env, check=False,
        )  # fmt: skip
        assert added.returncode != 0
        assert "--tls-certificate" in added.stderr
    listed = micropacs("nodes", "list", data_dir=site.server.data_dir, env=site.server.env)
    assert "BAD_CERT" not in listed.stdout
