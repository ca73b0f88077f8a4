"""The pynetdicom Application Entity every micropacs DIMSE service runs on.

Speed matters here (ARCHITECTURE.md, "Performance facts"): TCP_NODELAY on
every socket we accept or open, a large maximum PDU, chunked receive of
C-STORE datasets straight to disk, and optionally SO_REUSEPORT so several
processes share one DICOM port. So do bounds (ARCHITECTURE.md, "Security"):
PDU sizes and times (:mod:`~micropacs.dimse.pdu_limits`), pending connections
and associations per peer (:mod:`~micropacs.dimse.admission`), the called
AE title checked (PS3.8 9.3.4, reason called-AE-title-not-recognized), and
who may call from where and do what (:mod:`~micropacs.dimse.access`), as
whom (:mod:`~micropacs.dimse.user_identity`).
"""

from __future__ import annotations

import copy
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from micropacs.config import DicomSettings
from micropacs.dimse import (
    access,
    admission,
    find_responses,
    handoff,
    pdu_limits,
    received_digest,
    retrieve_scp,
    store_messages,
    store_requests,
    tls,
    user_identity,
    verification,
    wakeups,
)
from micropacs.dimse.sockets import NODELAY, close_sockets_always
from micropacs.tls import ClientTls, ServerTls

log = logging.getLogger(__name__)

_configured = threading.Lock()
_done = False


def configure_pynetdicom() -> None:
    """Set pynetdicom's process-wide flags once (STYLE.md, convention 7)."""
    global _done
    with _configured:
        if _done:
            return
        _config.LOG_REQUEST_IDENTIFIERS = False  # identifiers carry patient data
        _config.LOG_RESPONSE_IDENTIFIERS = False
        _config.LOG_HANDLER_LEVEL = "none"
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        # Identifiers with odd values must reach our handlers, which answer them properly.
        _config.ENFORCE_UID_CONFORMANCE = False
        retrieve_scp.install()
        find_responses.install()
        store_messages.install()  # after find_responses: both wrap send_msg
        store_requests.install()
        received_digest.install()
        close_sockets_always()
        pdu_limits.install()
        wakeups.install()
        _done = True


GC_INTERVAL = 30.0
"""Seconds between the full collections pynetdicom's server asks for (dead associations)."""

REJECTED_PERMANENT, SERVICE_USER, NO_REASON_GIVEN = 0x01, 0x01, 0x01
"""An A-ASSOCIATE-RJ's result, source and diagnostic (PS3.8 9.3.4)."""


def refuse_without_contexts(event: evt.Event) -> None:
    """EVT_REQUESTED handler: reject an A-ASSOCIATE-RQ that proposes no presentation
    context, which PS3.8 9.3.2 requires at least one of."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    if request is None or request.presentation_context_definition_list:
        return
    log.warning("association without presentation contexts rejected")
    assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, NO_REASON_GIVEN)
    evt.trigger(assoc, evt.EVT_REJECTED, {})  # counted and logged like every rejection
    assoc.kill()  # as pynetdicom does after its own rejections: the RJ leaves first


class RegistryAE(AE):
    """An AE whose callers are checked against the node registry.

    With ``node_access`` (:mod:`~micropacs.dimse.access`) each caller's title,
    address and permissions are checked; with only ``known_titles`` (strict),
    pynetdicom compares the calling AE title alone. Both are read at each
    association request, so a node added with ``micropacs nodes add`` takes
    effect at the next one.
    """

    node_access: access.NodeAccess | None = None
    user_identity: user_identity.UserIdentity | None = None

    def __init__(
        self,
        ae_title: str,
        known_titles: Callable[[], Sequence[str]] | None,
        settings: DicomSettings | None = None,
    ) -> None:
        super().__init__(ae_title=ae_title)
        self._known_titles = known_titles
        self.settings = settings or DicomSettings(ae_title=ae_title)
        files = self.settings.tls
        # What C-MOVE sub-associations to a node marked TLS use; files read at first use.
        self.tls_client = ClientTls(files.ca_file, files.cert_file, files.key_file)

    @property
    def require_calling_aet(self) -> list[str]:
        if self._known_titles is None:
            return []
        # An empty list means "accept anyone" to pynetdicom; strict with no nodes rejects all.
        return list(self._known_titles()) or ["\x00"]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        self._known_titles = (lambda: ae_titles) if ae_titles else None


def build_ae(
    settings: DicomSettings,
    known_titles: Callable[[], Sequence[str]] | None = None,
    *,
    nodes: access.NodeDirectory | None = None,
    identities: user_identity.UserIdentity | None = None,
) -> AE:
    """An AE with our timeouts and PDU size, accepting Verification (every listener
    answers C-ECHO, :mod:`~micropacs.dimse.verification`); the other contexts are added by
    each service.

    With ``nodes``, :class:`~micropacs.dimse.access.NodeAccess` decides who may
    call (``known_titles`` is then unused); with ``identities``, the User
    Identity each association presents is checked and limits it.
    """
    configure_pynetdicom()
    strict_titles = known_titles if settings.strict_nodes and nodes is None else None
    ae = RegistryAE(settings.ae_title, strict_titles, settings)
    if nodes is not None:
        ae.node_access = access.NodeAccess(nodes, strict=settings.strict_nodes)
    ae.user_identity = identities
    ae.require_called_aet = not settings.accept_any_called_ae
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = settings.acse_timeout
    # Also bounds the TLS handshake with a move destination, which has no timeout of its own.
    ae.connection_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.maximum_associations = settings.max_associations
    verification.add_context(ae)
    return ae


class ReusePortServer(ThreadedAssociationServer):
    """An association server that may share its port with other processes."""

    reuse_port = False
    pending: admission.PendingConnections | None = None
    tls: ServerTls | None = None
    dispatcher: handoff.Dispatcher | None = None
    _collected_at = 0.0

    def service_actions(self) -> None:
        # pynetdicom runs a full gc.collect() every 60 polls of its accept loop, meant as
        # every 30 s at its 0.5 s poll; at our 0.05 s poll that was every 3 s, a pause of
        # the whole process each time (4.5 % of the GIL under a C-STORE load).
        now = time.monotonic()
        if now - self._collected_at >= GC_INTERVAL:
            self._collected_at = now
            gc.collect()

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.tls is None or self.socket is None:
            return super().get_request()
        return tls.accept(self.socket, self.tls)  # the handshake waits for its own thread

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket) and not tls.handshake(
            request, self.ae.acse_timeout or 30.0, client_address
        ):
            if self.pending is not None:
                self.pending.settled(request)
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)

    def server_bind(self) -> None:
        if self.reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if (
            isinstance(request, socket.socket)
            and self.dispatcher is not None
            and self.dispatcher.hand(request, client_address)
        ):
            return  # a worker serves it
        if isinstance(request, socket.socket):
            # Until its first read sets a deadline, no send or read may block for ever.
            request.settimeout(self.ae.network_timeout)
            if self.pending is not None:
                self.pending.admit(request)
        super().process_request(request, client_address)


class SharedContexts(list[Any]):
    """Supported presentation contexts that associations share instead of deep-copying.

    pynetdicom deep-copies the acceptor's supported contexts for every
    association; with every storage SOP class in every transfer syntax that is
    ~7,600 validated UIDs and ~60 ms before the first byte of an answer. The
    negotiation only reads them, so a shallow copy of each context is enough.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.copy(context) for context in self]


def start_server(
    ae: AE,
    host: str,
    port: int,
    handlers: list[Any],
    *,
    reuse_port: bool = False,
    tls_server: ServerTls | None = None,
    dispatcher: handoff.Dispatcher | None = None,
) -> ThreadedAssociationServer:
    """Start accepting associations in a background thread; returns the server.

    The limits on pending connections and associations per peer are those of
    the settings an AE from :func:`build_ae` was built with. With ``tls_server``
    every connection speaks TLS (PS3.15 B.9), its handshake done in the
    connection's thread within the ACSE timeout. With ``dispatcher``, each accepted
    connection may go to a worker process instead (:mod:`~micropacs.dimse.handoff`).
    """
    settings = ae.settings if isinstance(ae, RegistryAE) else DicomSettings()
    # Pending connections count towards pynetdicom's limit: leave half of it to associations.
    pending = admission.PendingConnections(
        min(settings.max_pending, max(1, settings.max_associations // 2))
    )
    peers = admission.PeerLimits(
        settings.max_associations_per_address, settings.max_associations_per_calling_ae
    )
    checker = ae.node_access if isinstance(ae, RegistryAE) else None
    # Before the per-peer caps, so that a caller rejected here holds no slot.
    node_access = [] if checker is None else [(evt.EVT_REQUESTED, checker.check)]
    identities = ae.user_identity if isinstance(ae, RegistryAE) else None
    # After the per-peer caps, which so bound the password and token checks one peer starts.
    identity: list[Any] = (
        []
        if identities is None
        else [(evt.EVT_REQUESTED, identities.check), (evt.EVT_USER_ID, identities.answer)]
    )
    server_class = type(
        "Server",
        (ReusePortServer,),
        {"reuse_port": reuse_port, "pending": pending, "tls": tls_server, "dispatcher": dispatcher},
    )
    server = ae.make_server(
        (host, port),
        contexts=SharedContexts(ae.supported_contexts),
        evt_handlers=[
            NODELAY,
            (evt.EVT_REQUESTED, admission.on_requested, [pending]),
            (evt.EVT_CONN_CLOSE, admission.on_closed, [pending]),
            (evt.EVT_REQUESTED, refuse_without_contexts),
            *node_access,
            (evt.EVT_REQUESTED, peers.check),
            *identity,
            *handlers,
            *verification.bindings(handlers),
            *([] if dispatcher is None else [(evt.EVT_CONN_CLOSE, dispatcher.closed)]),
        ],
        server_class=server_class,
        ssl_context=tls_server.context if tls_server is not None else None,
    )
    # A short poll so that shutdown (each test, each rolling restart) does not wait 0.5 s.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="dicom-acceptor", daemon=True
    )
    thread.start()
    ae._servers.append(server)
    return server
