"""A private certificate authority for the stack's TLS listeners, made with ``cryptography``.

One CA signs a server certificate for ``127.0.0.1`` and ``localhost`` (Kafka's
SSL and SASL_SSL listeners, FerretDB's TLS listener, a MinIO a test starts
with ``--certs-dir``) and a client certificate (for Kafka's SSL listener,
which requires one). Keys are unencrypted PKCS#8 PEM, which Kafka's PEM key
store reads (``ssl.keystore.type=PEM``). The files are written once per run
directory and kept, so a stack started again keeps trusting the same CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    """The PEM files of a stack's CA, server and client."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The CA certificate: what clients trust."""
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        """The servers' certificate (127.0.0.1, localhost)."""
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        """The servers' private key."""
        return self.folder / "server.key"

    @property
    def server_pem(self) -> Path:
        """Key then certificate in one file: Kafka's PEM key store, FerretDB's pair."""
        return self.folder / "server.pem"

    @property
    def client_cert(self) -> Path:
        """A client certificate the CA issued (for Kafka's SSL listener)."""
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        """The client certificate's private key."""
        return self.folder / "client.key"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path, name: str = "micropacs stack") -> Pki:
    """The CA, server and client files in ``folder``, made unless already there."""
    pki = Pki(folder)
    if pki.client_key.exists():
        return pki
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} CA"))
        .issuer_name(_name(f"{name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(f"{name} server", server_key, ca, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue(f"{name} client", client_key, ca, ca_key, server=False)
    pem = serialization.Encoding.PEM
    pki.ca.write_bytes(ca.public_bytes(pem))
    for path, data in (
        (pki.server_cert, server.public_bytes(pem) + ca.public_bytes(pem)),
        (pki.server_key, _key_pem(server_key)),
        (pki.server_pem, _key_pem(server_key) + server.public_bytes(pem) + ca.public_bytes(pem)),
        (pki.client_cert, client.public_bytes(pem)),
        (pki.client_key, _key_pem(client_key)),
    ):
        path.write_bytes(data)
        path.chmod(0o600)
    return pki
