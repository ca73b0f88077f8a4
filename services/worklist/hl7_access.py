"""Who may open an MLLP connection to the HL7 listener, and how many at once.

MLLP (HL7 v2.5.1 Appendix C) carries no identity: whoever reaches the port may
send an ADT^A08 or A40 and change the patient that C-GET, C-MOVE and WADO-RS
send. So the listener takes connections only from loopback and the networks
of ``hl7_allowed_from``, and at most ``hl7_max_connections`` at once; any other
is closed at once, before a byte is read, and counted by reason. A listener
bound to an address other than loopback with no allow-list refuses to start,
as HTTP without authentication does, unless opened to all explicitly
(``["0.0.0.0/0", "::/0"]``). Log lines name the peer's address, never a message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

from prometheus_client import CollectorRegistry, Counter

from micropacs.auth.gate import is_loopback
from micropacs.config import WorklistSettings
from micropacs.exposure import OpenPort

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ADDRESS = "address"
LIMIT = "limit"
LOG_EVERY = 10.0
"""Seconds between two log lines of one refusal reason, so a flood writes few lines."""


def require_hl7_access(settings: WorklistSettings) -> None:
    """Refuse an MLLP listener on the network that would take messages from anyone."""
    if settings.hl7_allowed_from or is_loopback(settings.hl7_host):
        return
    raise OpenPort(
        f"HL7 MLLP listens on {settings.hl7_host} with no allow-list: set"
        ' MICROPACS_WORKLIST__HL7_ALLOWED_FROM to the RIS\'s networks (["10.1.2.0/24"]), or'
        ' to ["0.0.0.0/0", "::/0"] to take HL7 from anyone who reaches the port'
    )


def peer_address(writer: asyncio.StreamWriter) -> Address | None:
    """The IP address a connection comes from (an IPv4-mapped IPv6 one as IPv4)."""
    peer = writer.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Hl7Access:
    """The check each new MLLP connection passes before the listener reads from it."""

    def __init__(self, settings: WorklistSettings, registry: CollectorRegistry) -> None:
        require_hl7_access(settings)
        self._networks: list[Network] = [
            ipaddress.ip_network(network, strict=False) for network in settings.hl7_allowed_from
        ]
        self._max_connections = settings.hl7_max_connections
        self._refused = Counter(
            "micropacs_worklist_hl7_connections_refused_total",
            "MLLP connections closed at once, by reason: address (neither loopback nor in"
            " hl7_allowed_from) or limit (hl7_max_connections open already).",
            ["reason"],
            registry=registry,
        )
        for reason in (ADDRESS, LIMIT):
            self._refused.labels(reason)
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def allows(self, address: Address | None) -> bool:
        """Whether a connection from ``address`` may be served (loopback always may)."""
        if address is None:
            return False
        if address.is_loopback:
            return True
        return any(address.version == net.version and address in net for net in self._networks)

    def admit(self, writer: asyncio.StreamWriter, open_connections: int) -> bool:
        """Whether to serve this new connection, ``open_connections`` being served already;
        a refused one is counted and logged (the caller closes it)."""
        address = peer_address(writer)
        if not self.allows(address):
            self._refuse(ADDRESS, f"HL7 connection from {address} refused: not an allowed network")
            return False
        if open_connections >= self._max_connections:
            self._refuse(
                LIMIT,
                f"HL7 connection from {address} refused: {self._max_connections} connections open",
            )
            return False
        return True

    def _refuse(self, reason: str, line: str) -> None:
        self._refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._last_logged.get(reason, -LOG_EVERY) < LOG_EVERY:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._last_logged[reason] = now
        more = self._unlogged.pop(reason, 0)
        log.warning("%s%s", line, f" ({more} more since the last such line)" if more else "")
