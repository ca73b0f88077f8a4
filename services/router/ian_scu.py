"""N-CREATE of an Instance Availability Notification to a node (PS3.4 R.2.1, PS3.7 10.1.5),
on an association we open for it.

In a worker thread (pynetdicom blocks), with TCP_NODELAY, a large maximum PDU, bounded
connect, ACSE and DIMSE timeouts, and TLS to a node marked TLS (verified against our CA
file; nothing goes in plain text to such a node). The SOP Instance UID is given by us and
stays the same across retries of one notice, so an SCP that got a notice whose answer was
lost answers 0x0111 Duplicate SOP Instance, which counts as delivered.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context

from micropacs.config import DicomSettings
from micropacs.dimse.sockets import NODELAY
from micropacs.errors import Status
from micropacs.ports import Node
from micropacs.tls import ClientTls
from services.router.ian_content import IAN_SOP_CLASS

MAX_PDU = 128 * 1024
DUPLICATE_SOP_INSTANCE = 0x0111
"""N-CREATE failure of an instance the SCP already has (PS3.7 C.4.8): it has this notice."""
DELIVERED = frozenset(
    {
        Status.SUCCESS,
        0x0001,  # warning: requested optional attributes are not supported (PS3.7 C.4.8)
        0x0107,  # warning: attribute list error (some attributes not recognised)
        0x0116,  # warning: attribute value out of range
        DUPLICATE_SOP_INSTANCE,
    }
)
"""N-CREATE statuses under which the SCP has the notice."""


@dataclass(frozen=True)
class Outcome:
    """How a send ended: delivered, refused by a status, or no answer (``status`` None)."""

    delivered: bool
    status: int | None
    reason: str = ""


class Notifier:
    """Sends IAN N-CREATEs as our AE title, with our DICOM settings' TLS files."""

    def __init__(self, settings: DicomSettings, timeout: float) -> None:
        self._ae_title = settings.ae_title
        files = settings.tls
        self._tls = ClientTls(files.ca_file, files.cert_file, files.key_file)
        self._timeout = timeout

    def send(self, node: Node, attributes: Dataset, sop_instance_uid: str) -> Outcome:
        """N-CREATE ``attributes`` as the IAN instance ``sop_instance_uid`` at ``node``."""
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = MAX_PDU
        for name in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, name, self._timeout)
        tls_args = None
        if node.tls:
            try:
                tls_args = (self._tls.context(), node.host)
            except (OSError, ssl.SSLError) as exc:
                return Outcome(False, None, f"no TLS client context: {type(exc).__name__}")
        context = build_context(
            IAN_SOP_CLASS, [UID(ExplicitVRLittleEndian), UID(ImplicitVRLittleEndian)]
        )
        try:
            assoc = ae.associate(
                node.host,
                node.port,
                contexts=[context],
                ae_title=node.ae_title,
                max_pdu=MAX_PDU,
                evt_handlers=[NODELAY],
                tls_args=tls_args,
            )
            if not assoc.is_established:
                why = "rejected" if assoc.is_rejected else "unreachable or aborted"
                return Outcome(False, None, f"association {why}")
            try:
                if not assoc.accepted_contexts:
                    return Outcome(False, None, "IAN not accepted in the association")
                status, _ = assoc.send_n_create(attributes, IAN_SOP_CLASS, sop_instance_uid)
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            ae.shutdown()
        code = int(status.Status) if status is not None and "Status" in status else None
        if code is None:
            return Outcome(False, None, "no N-CREATE response")
        if code in DELIVERED:
            return Outcome(True, code)
        return Outcome(False, code, f"refused with status 0x{code:04X}")
