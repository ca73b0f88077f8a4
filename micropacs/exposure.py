"""Which ports a server may open to the network without any check of who calls.

HTTP has :func:`micropacs.auth.gate.require_authentication`; this is its twin
for the DICOM port. A DICOM port on a non-loopback address that accepts any
calling AE title (``strict_nodes`` off, PS3.8 9.3.4) without a User Identity
(``user_identity`` not ``required``, PS3.7 D.3.3.7) lets anyone on the network
query, retrieve and store every study under a made-up AE title: such a server
refuses to start unless ``MICROPACS_DICOM__OPEN=true`` says that the network
is closed.
"""

from __future__ import annotations

from micropacs.auth.gate import NoAuthentication, is_loopback
from micropacs.config import DicomSettings


class OpenPort(NoAuthentication):
    """A port would take calls from the whole network unchecked: refuse to start."""


def dicom_checks_callers(dicom: DicomSettings) -> bool:
    """Whether the DICOM port admits only registered nodes or proven identities."""
    return dicom.strict_nodes or dicom.user_identity == "required"


def require_dicom_access(dicom: DicomSettings) -> None:
    """Refuse a DICOM port on the network that admits any calling AE title, unless opened."""
    if is_loopback(dicom.host) or dicom_checks_callers(dicom) or dicom.open:
        return
    raise OpenPort(
        f"DICOM listens on {dicom.host} and admits any calling AE title: set"
        " MICROPACS_DICOM__STRICT_NODES=true (then register peers with `micropacs nodes add`)"
        " or MICROPACS_DICOM__USER_IDENTITY=required, or MICROPACS_DICOM__OPEN=true to serve"
        " every caller (only on a closed network)"
    )


def dicom_access_note(dicom: DicomSettings) -> str:
    """What the ready line says of who may call the DICOM port."""
    if dicom.strict_nodes:
        return "; DICOM: registered nodes only"
    if dicom.user_identity == "required":
        return "; DICOM: User Identity required"
    if is_loopback(dicom.host):
        return "; DICOM open to local callers of any AE title"
    return "; DICOM OPEN: any calling AE title on the network may query, retrieve and store"
