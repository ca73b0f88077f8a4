"""Which DICOM nodes may associate, from which addresses, and what each may do.

A calling AE title is only a claim: any peer may send any title. So a node
of the registry (:class:`~micropacs.ports.Node`) is recognised only when its
title comes from one of its addresses (what its host resolves to, and its
``allowed_from`` networks), as dcm4chee-arc and Orthanc
(``DicomCheckModalityHost``) check. Then:

- a registered title calling from another address is rejected, whatever the
  mode: A-ASSOCIATE-RJ rejected-permanent, service-user,
  calling-AE-title-not-recognized (PS3.8 9.3.4); so is a node bound to TLS
  client certificates (``Node.tls_certificates``) that does not present one
  of them (PS3.15 B.9), on the plain port too, where it can present none;
- with ``strict`` (``MICROPACS_DICOM__STRICT_NODES``) an unregistered title is
  rejected the same way; without it, it may do everything, as before;
- each operation of a recognised node needs its permission, else it is
  answered 0x0124 Refused: Not Authorized (PS3.7 Annex C, a failure status
  every DIMSE-C service may return); a C-MOVE to a node that may not be a
  move destination is answered 0xA801 Move Destination Unknown (PS3.4
  C.4.2.1.5) by the qr service.

The node is decided once per association, at its A-ASSOCIATE-RQ. The
registry is re-read at most once a second, host names resolved at most once
a minute; when the registry cannot be read and was never read, associations
are rejected transient rather than let through.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pynetdicom import evt

from micropacs.dimse.tls import peer_fingerprint
from micropacs.ports import Node

log = logging.getLogger(__name__)

REJECTED_PERMANENT, REJECTED_TRANSIENT = 0x01, 0x02
SERVICE_USER, PROVIDER_ACSE = 0x01, 0x02
CALLING_AE_NOT_RECOGNIZED, NO_REASON_GIVEN = 0x03, 0x01
"""A-ASSOCIATE-RJ result, source and diagnostic values (PS3.8 9.3.4, table 9-21)."""

NOT_AUTHORIZED = 0x0124
"""Refused: Not Authorized (PS3.7 Annex C): this node may not invoke the operation."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Permission(enum.Enum):
    """What a node may do; each value names the :class:`Node` field that grants it."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    MOVE_DESTINATION = "move_destination"

    def granted(self, node: Node) -> bool:
        """Whether ``node`` has this permission."""
        return bool(getattr(node, self.value))


class RegistryUnavailable(Exception):
    """The node registry could not be read and no earlier reading is at hand."""


class NodeDirectory:
    """The node registry as associations see it: re-read at most once per ``ttl`` seconds.

    ``load`` reads every node (it blocks; it runs in an association's thread).
    When a re-read fails the last good reading stays in use.
    """

    def __init__(self, load: Callable[[], Sequence[Node]], ttl: float = 1.0) -> None:
        self._load = load
        self._ttl = ttl
        self._lock = threading.Lock()
        self._read_at = -1e9
        self._nodes: dict[str, Node] | None = None

    def nodes(self) -> Mapping[str, Node]:
        """Every node by AE title; raises RegistryUnavailable if never read."""
        with self._lock:
            if time.monotonic() - self._read_at > self._ttl:
                try:
                    self._nodes = {node.ae_title: node for node in self._load()}
                except Exception as exc:  # any failure of the backend
                    log.warning("node registry unreadable", extra={"error": type(exc).__name__})
                    if self._nodes is None:
                        raise RegistryUnavailable("the node registry cannot be read") from exc
                self._read_at = time.monotonic()
            assert self._nodes is not None
            return self._nodes

    def titles(self) -> list[str]:
        """The registered AE titles ([] when the registry cannot be read)."""
        try:
            return list(self.nodes())
        except RegistryUnavailable:
            return []


class Resolver:
    """Host names to addresses, each kept ``ttl`` seconds (failures too)."""

    def __init__(self, ttl: float = 60.0) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, frozenset[Address]]] = {}

    def addresses(self, host: str) -> frozenset[Address]:
        """What ``host`` (a name or an IP literal) resolves to; empty if it does not."""
        try:
            return frozenset({_normal(ipaddress.ip_address(host))})
        except ValueError:
            pass
        with self._lock:
            found = self._known.get(host)
        if found is not None and time.monotonic() - found[0] < self._ttl:
            return found[1]
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            resolved = frozenset(_normal(ipaddress.ip_address(info[4][0])) for info in infos)
        except (OSError, ValueError, UnicodeError):
            log.warning("node host does not resolve", extra={"host": host})
            resolved = frozenset()
        with self._lock:
            self._known[host] = (time.monotonic(), resolved)
        return resolved


def _normal(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (a dual-stack socket's peer) as the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def calls_from(node: Node, peer: str, resolver: Resolver) -> bool:
    """Whether ``peer`` (an IP address as the socket gives it) is one of ``node``'s."""
    try:
        address = _normal(ipaddress.ip_address(peer.split("%", 1)[0]))
    except ValueError:
        return False
    try:
        if any(address in network for network in node.networks()):
            return True
    except ValueError:
        log.warning("node has an invalid allowed_from", extra={"calling_ae": node.ae_title})
    return node.from_host and address in resolver.addresses(node.host)


class NodeAccess:
    """The registry's verdict on each association, and each node's permissions.

    Bind :meth:`check` to ``EVT_REQUESTED`` before anything that admits the
    association; ask :meth:`permits` in each DIMSE handler.
    """

    def __init__(
        self, directory: NodeDirectory, *, strict: bool, resolver: Resolver | None = None
    ) -> None:
        self.directory = directory
        self.strict = strict
        self._resolver = resolver or Resolver()
        self._lock = threading.Lock()
        self._nodes: weakref.WeakKeyDictionary[Any, Node] = weakref.WeakKeyDictionary()

    def check(self, event: evt.Event) -> None:
        """EVT_REQUESTED handler: reject a caller the registry does not allow.

        It never raises: pynetdicom would skip the handlers bound after it.
        """
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None or assoc.is_rejected or assoc.is_aborted:
            return
        calling = str(request.calling_ae_title).strip()
        peer = str(assoc.requestor.address)
        certified = True
        try:
            node = self.directory.nodes().get(calling)
            allowed = node is not None and calls_from(node, peer, self._resolver)
            if allowed and node is not None and node.tls_certificates:
                certified = peer_fingerprint(assoc) in node.fingerprints()
        except Exception as exc:  # whatever failed, let nobody in unchecked
            if isinstance(exc, RegistryUnavailable):
                log.warning("association rejected: the node registry cannot be read")
            else:
                log.exception("association rejected: the node access check failed")
            reject(assoc, (REJECTED_TRANSIENT, PROVIDER_ACSE, NO_REASON_GIVEN))
            return
        if node is not None and allowed and certified:
            with self._lock:
                self._nodes[assoc] = node
            return
        if node is None and not self.strict:
            return
        if node is None:
            reason = "calling AE title not registered"
        elif allowed:
            reason = "a registered calling AE title without its TLS client certificate"
        else:
            reason = "a registered calling AE title from another address"
        log.warning(
            "association rejected: %s",
            reason,
            extra={"calling_ae": calling, "peer_address": peer},
        )
        reject(assoc, (REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED))

    def node_of(self, assoc: Any) -> Node | None:
        """The registered node an accepted association comes from, None for another caller."""
        with self._lock:
            return self._nodes.get(assoc)

    def permits(self, assoc: Any, permission: Permission) -> bool:
        """Whether the caller of ``assoc`` may do this: an unregistered caller (only
        accepted when not strict) may do everything."""
        node = self.node_of(assoc)
        return node is None or permission.granted(node)


def reject(assoc: Any, reason: tuple[int, int, int]) -> None:
    """Answer an A-ASSOCIATE-RQ with A-ASSOCIATE-RJ ``(result, source, diagnostic)``
    (PS3.8 9.3.4) from an EVT_REQUESTED handler, and end the association."""
    # pynetdicom sets this only once it negotiates; the rejection's log line and metric want it.
    assoc.requestor.ae_title = assoc.requestor.primitive.calling_ae_title
    assoc.acse.send_reject(*reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})  # counted and logged like every rejection
    assoc.kill()  # as pynetdicom does after its own rejections: the RJ leaves first


@runtime_checkable
class AssociationLimit(Protocol):
    """What else may limit an association beyond its node, e.g. the role of the user
    identity it presented (:mod:`~micropacs.dimse.user_identity`, ``ae.user_identity``)."""

    def permits(self, assoc: Any, permission: Permission) -> bool:
        """Whether ``assoc`` may do this, as far as this limit is concerned."""
        ...


def permits(assoc: Any, permission: Permission) -> bool:
    """Whether the caller of ``assoc`` may do this, by the :class:`NodeAccess` of its AE
    (``ae.node_access``) and its :class:`AssociationLimit` (``ae.user_identity``); an AE
    without them lets every caller do everything."""
    access = getattr(assoc.ae, "node_access", None)
    if isinstance(access, NodeAccess) and not access.permits(assoc, permission):
        return False
    limit = getattr(assoc.ae, "user_identity", None)
    return not isinstance(limit, AssociationLimit) or limit.permits(assoc, permission)


def refused(event: evt.Event, permission: Permission, operation: str) -> bool:
    """Whether a handler must refuse ``operation`` for lack of ``permission``; logs it."""
    if permits(event.assoc, permission):
        return False
    log.warning(
        "operation refused: not authorized for this node or user",
        extra={"operation": operation, "calling_ae": str(event.assoc.requestor.ae_title).strip()},
    )
    return True


def registered_node(assoc: Any) -> Node | None:
    """The registered node an association comes from, by the :class:`NodeAccess` of its AE
    (``ae.node_access``); None for an unregistered caller or an AE without one."""
    access = getattr(assoc.ae, "node_access", None)
    return access.node_of(assoc) if isinstance(access, NodeAccess) else None
