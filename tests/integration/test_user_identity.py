"""User Identity negotiation (PS3.7 D.3.3.7) against a real ``micropacs serve``
(docs/security.md, "User Identity negotiation").

Identities are local users made with ``micropacs users add`` and JWTs signed
by a real token issuer that the server fetches keys from; the peers are
pynetdicom SCUs and DCMTK's storescu ``--user``/``--password``/``--jwt``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from micropacs.dimse.sockets import close_sockets_always
from tests import dicomdata
from tests.integration.peers import (
    Rejection,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
    associate_or_rejection,
    dcmtk,
    free_port,
    study_identifier,
)
from tests.integration.server import Server, micropacs, start_server
from tests.integration.test_tls import Pki, client_context, pki
from tests.integration.token_issuer import TokenIssuer, new_key, token_issuer

__all__ = ["pki"]  # a fixture: the test certificates

CT = "1.2.840.10008.5.1.4.1.1.2"
NOT_AUTHORIZED = 0x0124
PASSWORDS = {"op.smith": "operator-secret-1", "dr.viewer": "viewer-secret-22"}
ROLES = {"op.smith": "operator", "dr.viewer": "viewer"}
NAME_ONLY, PASSCODE, JWT = 1, 2, 5


@pytest.fixture(autouse=True, scope="module")
def _peers_close_their_sockets() -> None:
    close_sockets_always()  # pynetdicom leaves refused sockets open otherwise


@dataclass
class Site:
    server: Server
    issuer: TokenIssuer


def _start(
    folder: Path, issuer: TokenIssuer, mode: str, extra: dict[str, str] | None = None
) -> Server:
    env = {
        "MICROPACS_DICOM__USER_IDENTITY": mode,
        "MICROPACS_AUTH__BACKEND": "oidc",
        "MICROPACS_AUTH__OIDC_ISSUER": issuer.url,
        "MICROPACS_AUTH__OIDC_AUDIENCE": "micropacs",
        # These sites test the checks themselves on the plain port; `secure` below does not.
        "MICROPACS_DICOM__USER_IDENTITY_PLAIN": "true",
        **(extra or {}),
    }
    server = start_server(folder / "data", env=env)
    for name, password in PASSWORDS.items():
        micropacs(
            "users", "add", name, "--role", ROLES[name], "--password", password,
            data_dir=server.data_dir, env=server.env,
        )  # fmt: skip
    micropacs(
        "nodes", "add", "BOUND_CT", "127.0.0.1", str(free_port()), "--user-id", "op.smith",
        data_dir=server.data_dir, env=server.env,
    )  # fmt: skip
    time.sleep(1.2)  # the node registry is re-read at most once a second
    return server


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    with token_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer) -> Iterator[Site]:
    server = _start(tmp_path_factory.mktemp("required"), issuer, "required")
    yield Site(server, issuer)
    server.stop()


@pytest.fixture(scope="module")
def optional(tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer) -> Iterator[Site]:
    server = _start(tmp_path_factory.mktemp("optional"), issuer, "optional")
    yield Site(server, issuer)
    server.stop()


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer, pki: Pki
) -> Iterator[tuple[Site, int]]:
    """A site with the default USER_IDENTITY_PLAIN=false and a DICOM TLS port."""
    server = _start(
        tmp_path_factory.mktemp("secure"),
        issuer,
        "optional",
        {
            "MICROPACS_DICOM__USER_IDENTITY_PLAIN": "false",
            "MICROPACS_DICOM__TLS__PORT": "0",
            "MICROPACS_DICOM__TLS__CERT_FILE": str(pki.server_cert),
            "MICROPACS_DICOM__TLS__KEY_FILE": str(pki.server_key),
            "MICROPACS_DICOM__TLS__CA_FILE": str(pki.ca),
        },
    )
    found = re.search(r"DICOM TLS on port (\d+)", server.log())
    assert found, server.log()
    yield Site(server, issuer), int(found.group(1))
    server.stop()


def identity(
    kind: int, primary: bytes, secondary: bytes = b"", *, response: bool = False
) -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = primary
    if kind == PASSCODE:
        item.secondary_field = secondary
    item.positive_response_requested = response
    return item


def password_of(name: str, *, response: bool = False) -> UserIdentityNegotiation:
    return identity(PASSCODE, name.encode(), PASSWORDS[name].encode(), response=response)


def answer(
    server: Server,
    item: UserIdentityNegotiation | None,
    contexts: list[str] | None = None,
    calling: str = "PYSCU",
) -> tuple[Any, Rejection | None]:
    """The association requested with ``item``, and the A-ASSOCIATE-RJ it received."""
    ae = AE(ae_title=calling)
    for context in contexts or [Verification]:
        ae.add_requested_context(context)
    return associate_or_rejection(
        ae,
        server.host,
        server.dicom_port,
        ae_title=server.ae_title,
        ext_neg=[item] if item is not None else None,
    )


def associate(
    server: Server,
    item: UserIdentityNegotiation | None,
    contexts: list[str] | None = None,
    calling: str = "PYSCU",
) -> Any:
    return answer(server, item, contexts, calling)[0]


def rejection(server: Server, item: UserIdentityNegotiation | None, calling: str = "PYSCU") -> Any:
    """(result, source, diagnostic) of the A-ASSOCIATE-RJ, or None when accepted."""
    assoc, rejected = answer(server, item, calling=calling)
    if assoc.is_established:
        assoc.release()
        return None
    assert rejected is not None, "neither accepted nor rejected"
    return rejected


REJECTED = (0x01, 0x01, 0x01)
"""Rejected-permanent, service-user, no-reason-given (PS3.8 9.3.4)."""


def store(server: Server, item: UserIdentityNegotiation | None, ds: Dataset) -> int:
    assoc = associate(server, item, [CT])
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def find(server: Server, item: UserIdentityNegotiation | None, study: str) -> tuple[int, int]:
    """(matches, final status) of a study-level C-FIND."""
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(server, item, [model])
    assert assoc.is_established
    matches, final = 0, -1
    try:
        for status, _ in assoc.send_c_find(study_identifier(StudyInstanceUID=study), model):
            if int(status.Status) in (0xFF00, 0xFF01):
                matches += 1
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return matches, final


def test_required_rejects_an_association_without_an_identity(required: Site) -> None:
    assert rejection(required.server, None) == REJECTED
    echo = dcmtk(
        "echoscu", "-aec", required.server.ae_title, required.server.host,
        str(required.server.dicom_port), check=False,
    )  # fmt: skip
    assert echo.returncode != 0
    assert rejection(required.server, password_of("op.smith")) is None  # still serving


def test_a_local_user_and_password_is_accepted_with_a_positive_response(required: Site) -> None:
    assoc = associate(required.server, password_of("op.smith", response=True))
    assert assoc.is_established
    try:
        answer = assoc.acceptor.user_identity
        assert answer is not None and answer.server_response == b""
        assert int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()
    # No positive response when none was asked for.
    assoc = associate(required.server, password_of("op.smith"))
    assert assoc.is_established
    assert assoc.acceptor.user_identity is None
    assoc.release()


@pytest.mark.parametrize(
    "item",
    [
        identity(PASSCODE, b"op.smith", b"not-the-password"),
        identity(PASSCODE, b"nobody", b"whatever-password"),
        identity(PASSCODE, b"\xff\xfe", b"\xff"),
        identity(NAME_ONLY, b"op.smith"),  # a name alone proves nothing unless enabled
        identity(JWT, b"not.a.token"),
        identity(3, b"kerberos ticket"),
    ],
    ids=["bad-password", "unknown-user", "not-utf8", "name-only", "bad-jwt", "krb"],
)
def test_required_rejects_identities_that_do_not_check_out(
    required: Site, item: UserIdentityNegotiation
) -> None:
    assert rejection(required.server, item) == REJECTED


def test_a_viewer_may_query_but_not_store(required: Site) -> None:
    ds = dicomdata.ct_image(rows=32, cols=32)
    assert store(required.server, password_of("dr.viewer"), ds) == NOT_AUTHORIZED
    assert store(required.server, password_of("op.smith"), ds) == 0x0000
    deadline = time.monotonic() + 30
    while find(required.server, password_of("dr.viewer"), ds.StudyInstanceUID) != (1, 0):
        assert time.monotonic() < deadline, "the stored study was never found by the viewer"
        time.sleep(0.2)


def test_jwts_of_the_identity_provider(required: Site) -> None:
    issuer, server = required.issuer, required.server
    operator = issuer.token(roles=["operator"]).encode()
    ds = dicomdata.ct_image(rows=32, cols=32)
    assert store(server, identity(JWT, operator), ds) == 0x0000
    viewer = issuer.token(roles=["viewer"]).encode()
    assert store(server, identity(JWT, viewer), ds) == NOT_AUTHORIZED
    assoc = associate(server, identity(JWT, viewer, response=True))
    assert assoc.is_established
    answer = assoc.acceptor.user_identity
    assert answer is not None and answer.server_response == b""
    assoc.release()
    for refused in [
        issuer.token(lifetime=-120),  # expired
        issuer.token(audience="another-service"),
        issuer.token(key=new_key()),  # not signed by the provider
        issuer.token(roles=["nurse"]),  # no micropacs role
    ]:
        assert rejection(server, identity(JWT, refused.encode())) == REJECTED


def test_storescu_with_user_and_password_and_with_a_jwt(required: Site, tmp_path: Path) -> None:
    server = required.server
    files = dicomdata.make_ct_series(tmp_path / "ct", 2, rows=32, cols=32)
    address = [server.host, str(server.dicom_port), *map(str, files)]
    base = ["-aec", server.ae_title, "-aet", "STORESCU"]
    dcmtk("storescu", *base, "--user", "op.smith", "--password", PASSWORDS["op.smith"],
          "--pos-response", *address)  # fmt: skip
    wrong = dcmtk("storescu", *base, "--user", "op.smith", "--password", "wrong-password-1",
                  *address, check=False)  # fmt: skip
    assert wrong.returncode != 0
    assert "Association Rejected" in wrong.stdout + wrong.stderr
    token = tmp_path / "token.jwt"
    token.write_text(required.issuer.token(roles=["operator"]))
    dcmtk("storescu", *base, "--jwt", str(token), "--pos-response", *address)


def test_a_node_with_a_user_id_must_present_that_user(required: Site) -> None:
    server = required.server
    assert rejection(server, password_of("dr.viewer"), calling="BOUND_CT") == REJECTED
    assert rejection(server, password_of("op.smith"), calling="BOUND_CT") is None


def test_passwords_and_tokens_never_reach_the_log(required: Site) -> None:
    token = required.issuer.token(roles=["viewer"])
    assert rejection(required.server, identity(JWT, token.encode() + b"x")) == REJECTED
    assert rejection(required.server, identity(PASSCODE, b"op.smith", b"leaked-secret-9"))
    log = required.server.log()
    assert "association rejected: user identity not valid" in log
    for secret in [*PASSWORDS.values(), "leaked-secret-9", token, token.split(".")[1]]:
        assert secret not in log


def test_optional_lets_anonymous_callers_in_but_not_bad_identities(optional: Site) -> None:
    server = optional.server
    ds = dicomdata.ct_image(rows=32, cols=32)
    assert store(server, None, ds) == 0x0000  # no identity: the node's rights only
    assert rejection(server, identity(PASSCODE, b"op.smith", b"not-the-password")) == REJECTED
    assert rejection(server, identity(3, b"kerberos ticket")) is None  # unsupported: ignored
    assert store(server, password_of("dr.viewer"), ds) == NOT_AUTHORIZED
    # A node bound to a user still needs it, optional or not.
    assert rejection(server, None, calling="BOUND_CT") == REJECTED
    assert rejection(server, password_of("op.smith"), calling="BOUND_CT") is None


def tls_identity_echo(site: Site, port: int, item: UserIdentityNegotiation, pki: Pki) -> Any:
    """The A-ASSOCIATE-RJ of a TLS association presenting ``item``, or None if accepted."""
    ae = AE(ae_title="PYTLS")
    ae.add_requested_context(Verification)
    assoc, rejected = associate_or_rejection(
        ae,
        "127.0.0.1",
        port,
        ae_title=site.server.ae_title,
        ext_neg=[item],
        tls_args=(client_context(pki), "127.0.0.1"),
    )
    if assoc.is_established:
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
        return None
    assert rejected is not None, "neither accepted nor rejected"
    return rejected


def test_passwords_and_tokens_are_refused_without_tls_and_checked_with_it(
    secure: tuple[Site, int], pki: Pki
) -> None:
    site, tls_port = secure
    token = site.issuer.token(roles=["operator"]).encode()
    # The right password and a valid token, in clear text: refused, unchecked.
    assert rejection(site.server, password_of("op.smith")) == REJECTED
    assert rejection(site.server, identity(JWT, token)) == REJECTED
    assert "a password or token without TLS" in site.server.log()
    assert rejection(site.server, None) is None  # optional: anonymous callers still come in
    # Over TLS the same identities check out, and a wrong password still does not.
    assert tls_identity_echo(site, tls_port, password_of("op.smith"), pki) is None
    assert tls_identity_echo(site, tls_port, identity(JWT, token), pki) is None
    wrong = identity(PASSCODE, b"op.smith", b"not-the-password")
    assert tls_identity_echo(site, tls_port, wrong, pki) == REJECTED
