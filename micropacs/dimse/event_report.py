"""N-EVENT-REPORT to a node on an association we open (PS3.7 10.1.1), as an SCP of a SOP class.

The Storage Commitment SCP reports its result on a new association to the
requestor (PS3.4 J.3.3): it is the association's requestor but the SOP
class's SCP, so it proposes the SCP role with SCP/SCU Role Selection
Negotiation (PS3.7 D.3.3.4) and the requestor, acting as SCU, accepts it.
Like :mod:`micropacs.dimse.scu`: in a worker thread (pynetdicom blocks), with
TCP_NODELAY, our large maximum PDU, bounded connect, ACSE and DIMSE timeouts,
and TLS to a node marked TLS.
"""

from __future__ import annotations

import ssl

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role

from micropacs.config import DicomSettings
from micropacs.dimse.scu import MAX_PDU
from micropacs.dimse.sockets import NODELAY
from micropacs.ports import Node
from micropacs.tls import ClientTls


class ReportFailed(Exception):
    """No association with the node, or no answer to the N-EVENT-REPORT."""


class EventReports:
    """Sends N-EVENT-REPORTs as our AE title, with our DICOM settings' TLS files."""

    def __init__(self, settings: DicomSettings, timeout: float) -> None:
        self._ae_title = settings.ae_title
        files = settings.tls
        self._tls = ClientTls(files.ca_file, files.cert_file, files.key_file)
        self._timeout = timeout

    def send(
        self,
        node: Node,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type: int,
        information: Dataset,
    ) -> int:
        """Report an event of ``sop_class_uid`` to ``node`` on a new association; the
        status the node answered. :class:`ReportFailed` when there is no association
        or no answer (worth trying again later). It blocks: run it in a worker thread."""
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = MAX_PDU
        for name in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, name, self._timeout)
        ae.add_requested_context(sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = None
        if node.tls:
            try:
                tls_args = (self._tls.context(), node.host)
            except (OSError, ssl.SSLError) as exc:
                raise ReportFailed(f"no TLS client context: {type(exc).__name__}") from exc
        try:
            assoc = ae.associate(
                node.host,
                node.port,
                ae_title=node.ae_title,
                max_pdu=MAX_PDU,
                ext_neg=[build_role(sop_class_uid, scp_role=True)],
                evt_handlers=[NODELAY],
                tls_args=tls_args,
            )
            if not assoc.is_established:
                why = "rejected" if assoc.is_rejected else "unreachable or aborted"
                raise ReportFailed(f"association with {node.ae_title} {why}")
            try:
                status, _ = assoc.send_n_event_report(
                    information, event_type, sop_class_uid, sop_instance_uid
                )
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            ae.shutdown()
        code = getattr(status, "Status", None)
        if code is None:
            raise ReportFailed(f"no answer from {node.ae_title} to the N-EVENT-REPORT")
        return int(code)
