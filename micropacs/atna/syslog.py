"""Syslog transport of audit messages to an Audit Record Repository (IHE ITI-20).

Messages are RFC 5424 (facility 10, security/authorization; severity 5, notice;
MSGID ``IHE+RFC-3881``; the XML after a UTF-8 BOM as MSG). Over TLS (RFC 5425)
and plain TCP each is framed by octet counting (``MSG-LEN SP SYSLOG-MSG``); over
UDP (RFC 5426, for test labs: nothing tells a lost datagram) one message is one
datagram.

A :class:`SyslogSender` keeps one connection open and opens it again after a
failure; a message counts as accepted once written and drained into the
connection, since syslog answers nothing. Errors are
:class:`AuditRepositoryUnavailable` (retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from pathlib import Path
from typing import Literal

from micropacs.errors import Unavailable

FACILITY = 10
"""security/authorization messages (RFC 5424 6.2.1), as IHE ATNA asks."""
SEVERITY = 5
"""notice"""
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"

Transport = Literal["tls", "tcp", "udp"]


class AuditRepositoryUnavailable(Unavailable):
    """The Audit Record Repository cannot be reached or refused the connection."""


def _header_field(value: str, most: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``most`` long, or "-"."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:most]
    return text or "-"


def syslog_message(
    msg: bytes, timestamp: str, hostname: str, app_name: str = "micropacs", procid: str = ""
) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``msg`` (UTF-8, after a BOM)."""
    header = " ".join(
        (
            f"<{FACILITY * 8 + SEVERITY}>1",
            _header_field(timestamp, 32),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid or str(os.getpid()), 128),
            MSGID,
            "-",  # no structured data
        )
    )
    return header.encode("ascii") + b" " + BOM + msg


def octet_counted(message: bytes) -> bytes:
    """``message`` framed by octet counting (RFC 5425 4.3, RFC 6587 3.4.1)."""
    return str(len(message)).encode("ascii") + b" " + message


def client_tls(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.2 or later, verifying the repository's certificate (against ``ca_file``, else
    the system's CAs) and presenting ours when given (RFC 5425 5, IHE ATNA node
    authentication)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class _Datagrams(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable: UDP tells nothing reliable, the next send goes on


class SyslogSender:
    """Sends syslog messages to ``host:port`` over ``transport``, reconnecting as needed."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: Transport = "tls",
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if transport == "tls" and tls is None:
            raise ValueError("the tls transport needs a TLS context")
        self._host = host
        self._port = port
        self._transport = transport
        self._tls = tls
        self._timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def send(self, message: bytes) -> None:
        """Send one SYSLOG-MSG; AuditRepositoryUnavailable if it could not be written
        (the connection is dropped and opened again by the next call)."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._transport == "udp":
                    await self._send_datagram(message)
                    return
                writer = await self._connected()
                writer.write(octet_counted(message))
                await writer.drain()
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            await self.close()
            raise AuditRepositoryUnavailable(
                f"audit record repository {self._host}:{self._port} ({self._transport}):"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    async def _connected(self) -> asyncio.StreamWriter:
        if self._writer is not None and self._reader is not None and self._reader.at_eof():
            await self.close()  # the repository closed it: a write would go nowhere
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._tls if self._transport == "tls" else None,
                server_hostname=self._host if self._transport == "tls" else None,
            )
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._writer

    async def _send_datagram(self, message: bytes) -> None:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(self._host, self._port)
            )
        self._udp.sendto(message)

    async def close(self) -> None:
        """Close the connection (a later send opens a new one)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
                async with asyncio.timeout(self._timeout):
                    await writer.wait_closed()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
