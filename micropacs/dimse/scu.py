"""The associations micropacs opens to nodes: C-ECHO to verify one (PS3.4 A.4), C-STORE to
send it instances (PS3.4 B.2.3): the admin's send jobs and the router's forwarding.

Both run in a worker thread (pynetdicom blocks), with TCP_NODELAY on the socket,
our large maximum PDU, bounded connect, ACSE and DIMSE timeouts, and TLS to a
node marked TLS (verified against the configured CA; nothing is sent in plain
text to such a node). Each instance goes as stored when the node accepts its
transfer syntax, else converted (:func:`~micropacs.dimse.retrieve_scp.send_instance`);
a send may prefer a syntax (a routing rule's), which is proposed first.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from micropacs.config import DicomSettings
from micropacs.dimse.retrieve_scp import send_instance
from micropacs.dimse.sockets import NODELAY
from micropacs.dimse.store_scu import paused, usable
from micropacs.errors import MicropacsError
from micropacs.ports import InstanceLocation, Node
from micropacs.tls import ClientTls

MAX_PDU = 128 * 1024
MAX_CONTEXTS = 128
UNABLE_TO_PROCESS = 0xC000


@dataclass(frozen=True)
class EchoResult:
    """How a C-ECHO ended: its status (None when no association) and the round trip."""

    reachable: bool
    status: int | None
    round_trip_ms: float
    reason: str = ""


class Associations:
    """Opens associations as our AE title, with our DICOM settings' TLS files."""

    def __init__(self, settings: DicomSettings, timeout: float) -> None:
        self._ae_title = settings.ae_title
        files = settings.tls
        self._tls = ClientTls(files.ca_file, files.cert_file, files.key_file)
        self._timeout = timeout

    def _ae(self) -> AE:
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = MAX_PDU
        ae.connection_timeout = self._timeout
        ae.acse_timeout = self._timeout
        ae.dimse_timeout = self._timeout
        ae.network_timeout = self._timeout
        return ae

    @contextmanager
    def _associated(self, node: Node, contexts: Sequence[PresentationContext]) -> Iterator[Any]:
        ae = self._ae()
        tls_args = None
        if node.tls:
            try:
                tls_args = (self._tls.context(), node.host)
            except (OSError, ssl.SSLError) as exc:
                raise AssociationFailed(f"no TLS client context: {type(exc).__name__}") from exc
        assoc = ae.associate(
            node.host,
            node.port,
            contexts=list(contexts),
            ae_title=node.ae_title,
            max_pdu=MAX_PDU,
            evt_handlers=[NODELAY],
            tls_args=tls_args,
        )
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "unreachable or aborted"
            raise AssociationFailed(f"association with {node.ae_title} {why}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()

    def echo(self, node: Node) -> EchoResult:
        """C-ECHO ``node`` (PS3.4 A.4); the round trip covers association and release."""
        started = time.perf_counter()
        try:
            with self._associated(node, [build_context(Verification)]) as assoc:
                status = assoc.send_c_echo()
        except AssociationFailed as exc:
            return EchoResult(False, None, _ms_since(started), str(exc))
        code = int(getattr(status, "Status", -1)) if status else None
        reason = "" if code == 0 else "no C-ECHO response" if code is None else "failure status"
        return EchoResult(True, code, _ms_since(started), reason)

    def store(
        self,
        node: Node,
        instances: Sequence[InstanceLocation],
        open_file: Callable[[InstanceLocation], Any],
        sent: Callable[[InstanceLocation, int | None, str], None],
        prefer: str = "",
    ) -> str:
        """C-STORE each of ``instances`` on one association (PS3.4 B.2.3), calling
        ``sent`` with each one's status; ``open_file`` gives a context manager of its
        local path. An association that fails fails every instance not yet sent.

        With ``prefer`` (a transfer syntax UID) each instance is converted to it when
        the node accepts it and the object can be written in it (pixel data the encoder
        takes); otherwise it goes as stored, or in a syntax the node accepts.

        Returns why the association failed or ended early ("" when it did not): the
        node, not an instance, failed then.
        """
        contexts: list[PresentationContext] = []
        seen: set[tuple[str, str]] = set()
        for loc in instances:
            proposals: list[list[str]] = [
                [loc.transfer_syntax_uid],
                [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)],
            ]
            if prefer and prefer != loc.transfer_syntax_uid:
                proposals.insert(0, [prefer])
            for syntaxes in proposals:
                key = (loc.sop_class_uid, ",".join(syntaxes))
                if key not in seen and len(contexts) < MAX_CONTEXTS:
                    seen.add(key)
                    contexts.append(build_context(loc.sop_class_uid, [UID(s) for s in syntaxes]))
        done = 0
        try:
            with self._associated(node, contexts) as assoc, paused(assoc):
                for number, loc in enumerate(instances, start=1):
                    if not usable(assoc):
                        raise AssociationFailed("the association ended")
                    try:
                        with open_file(loc) as path:
                            status = send_instance(
                                assoc, loc, Path(path), number % 65536 or 1, prefer=prefer
                            )
                        sent(loc, status, "")
                    except MicropacsError as exc:
                        sent(loc, None, str(exc))
                    done += 1
        except AssociationFailed as exc:
            for loc in instances[done:]:
                sent(loc, None, str(exc))
            return str(exc)
        return ""


class AssociationFailed(Exception):
    """No association with the node, or it ended early."""


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
