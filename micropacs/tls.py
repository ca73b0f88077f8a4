"""TLS contexts for DICOM and HTTP, with the BCP 195 profile and certificates reloaded from files.

DICOM TLS follows PS3.15 B.9, the Non-downgrading BCP 195 TLS Secure
Transport Connection Profile (BCP 195, RFC 9325): TLS 1.2 or later only,
cipher suites with forward secrecy and authenticated encryption (ECDHE or DHE
key exchange, AES-GCM or ChaCha20-Poly1305; every TLS 1.3 suite is such),
no TLS compression (CRIME) and no renegotiation. HTTPS uses the same profile.

Certificates come from files that a site (or Kubernetes, through a mounted
Secret) replaces in place. :class:`ServerTls` re-reads them when their
modification time, size or inode changes, checked at most every
:data:`RELOAD_INTERVAL` seconds, loads them into a fresh hardened context
and, only if the pair loads, makes that the current one, so the next
handshake presents the new certificate; connections already open keep
theirs. A pair that does not load (a certificate written before its key) is
logged and retried at the next check, the old context serving meanwhile,
untouched. The CA file is read once, at start.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

RELOAD_INTERVAL: Final = 2.0
"""Seconds between two checks of whether the certificate files changed."""

BCP195_CIPHERS: Final = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)
"""The TLS 1.2 cipher suites RFC 9325 4.2 recommends (TLS 1.3 suites are OpenSSL's, all AEAD)."""

_Stamp = tuple[tuple[int, int, int], ...]


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict ``context`` to the BCP 195 profile (PS3.15 B.9): TLS 1.2+, forward-secret
    AEAD suites, no compression, no renegotiation. Returns ``context``."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    return context


def _stamp(*paths: Path) -> _Stamp:
    """What changes when a file is rewritten or replaced (a Secret's symlink swapped)."""
    stamps = []
    for path in paths:
        found = path.stat()
        stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
    return tuple(stamps)


class ServerTls:
    """The server side of TLS: a hardened context with our certificate chain, rebuilt
    from its files when they change.

    With ``ca_file``, clients must present a certificate that chains to it
    (``CERT_REQUIRED``); without, none is asked for. Raises :class:`OSError` or
    :class:`ssl.SSLError` at construction when the files cannot be loaded, so a
    misconfigured server refuses to start.

    :attr:`context` is the current context: wrap each new connection with it
    (the DICOM acceptor does). A server that keeps the context it was given
    (uvicorn) still presents the current pair: every context built here has an
    SNI callback, called in each handshake, that moves the connection to the
    current context before the certificate is chosen.
    """

    def __init__(
        self,
        cert_file: Path,
        key_file: Path | None = None,
        ca_file: Path | None = None,
        interval: float = RELOAD_INTERVAL,
    ) -> None:
        self.cert_file, self.key_file = cert_file, key_file or cert_file
        self._interval = interval
        self._ca = ca_file.read_text() if ca_file is not None else None
        self._lock = threading.Lock()
        self._loaded = _stamp(self.cert_file, self.key_file)
        self.context = self._build()
        self._checked = time.monotonic()

    def _build(self) -> ssl.SSLContext:
        context = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        if self._ca is not None:
            context.load_verify_locations(cadata=self._ca)
            context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.cert_file, self.key_file)
        context.sni_callback = self._to_current
        return context

    def _to_current(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        current = self.context
        if connection.context is not current:
            connection.context = current

    def refresh(self) -> bool:
        """Reload the certificate chain if its files changed; returns whether it did.

        Cheap when called often: the files are looked at once per interval. The
        context in use is never modified: a new one replaces it.
        """
        now = time.monotonic()
        if now - self._checked < self._interval:
            return False
        with self._lock:
            self._checked = now
            try:
                stamp = _stamp(self.cert_file, self.key_file)
                if stamp == self._loaded:
                    return False
                context = self._build()
            except (OSError, ssl.SSLError) as exc:
                log.warning(
                    "TLS certificate not reloaded, the previous one still serves",
                    extra={"cert_file": str(self.cert_file), "reason": type(exc).__name__},
                )
                return False
            self.context, self._loaded = context, stamp
        log.info("TLS certificate reloaded", extra={"cert_file": str(self.cert_file)})
        return True


class ClientTls:
    """The client side of TLS, for the associations we open (C-MOVE sub-operations).

    The peer's certificate must chain to ``ca_file``, or to the system's trust
    store without one, and name the host we connect to (a DNS name or an IP
    address in its subjectAltName). With ``cert_file`` we present that
    certificate to peers that ask for one. The context is built on first use
    and rebuilt, never modified, when a file changes, since several
    association threads may use it at once.
    """

    def __init__(
        self,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        interval: float = RELOAD_INTERVAL,
    ) -> None:
        self._ca_file, self._cert_file = ca_file, cert_file
        self._key_file = key_file or cert_file
        self._interval = interval
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._loaded: _Stamp = ()
        self._checked = -1e9

    def _files(self) -> list[Path]:
        return [p for p in (self._ca_file, self._cert_file, self._key_file) if p is not None]

    def _build(self) -> ssl.SSLContext:
        context = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # verifies peer and host name
        if self._ca_file is not None:
            context.load_verify_locations(cafile=self._ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self._cert_file is not None:
            context.load_cert_chain(self._cert_file, self._key_file)
        return context

    def context(self) -> ssl.SSLContext:
        """The current client context; raises :class:`OSError` or :class:`ssl.SSLError`
        when none could ever be built from the files."""
        with self._lock:
            now = time.monotonic()
            if self._context is not None and now - self._checked < self._interval:
                return self._context
            self._checked = now
            try:
                stamp = _stamp(*self._files())
                if self._context is None or stamp != self._loaded:
                    self._context, self._loaded = self._build(), stamp
            except (OSError, ssl.SSLError) as exc:
                if self._context is None:
                    raise
                log.warning(
                    "TLS client certificate not reloaded, the previous one still serves",
                    extra={"reason": type(exc).__name__},
                )
            return self._context
