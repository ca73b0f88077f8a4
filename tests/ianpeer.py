"""An Instance Availability Notification SCP for the tests: a real pynetdicom AE that keeps
every N-CREATE it receives and answers the status it is told (PS3.4 R.2.1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import N_CREATE
from pynetdicom.transport import ThreadedAssociationServer

IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"
TIMEOUT = 10.0


@dataclass
class Received:
    """One N-CREATE the SCP got: the IAN's SOP Instance UID and its attribute list."""

    sop_instance_uid: str
    attributes: Dataset
    calling_ae: str


@dataclass
class IanScp:
    """What the SCP received, and the status it answers (settable while it runs)."""

    port: int = 0
    status: int = 0x0000
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request = event.request
        assert isinstance(request, N_CREATE)
        attributes = event.attribute_list
        with self.lock:
            self.received.append(
                Received(
                    str(request.AffectedSOPInstanceUID),
                    attributes,
                    str(event.assoc.requestor.ae_title),
                )
            )
            status = self.status
        return status, (attributes if status == 0 else None)

    def notices(self) -> list[Received]:
        """What it received until now."""
        with self.lock:
            return list(self.received)


@contextmanager
def ian_scp(ae_title: str = "RIS", status: int = 0x0000) -> Iterator[IanScp]:
    """An IAN SCP on a free port of 127.0.0.1, shut down when the block ends."""
    scp = IanScp(status=status)
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_supported_context(IAN_SOP_CLASS)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_CREATE, scp.handle)]
    )
    assert isinstance(server, ThreadedAssociationServer)
    scp.port = int(server.server_address[1])
    try:
        yield scp
    finally:
        associations = ae.active_associations
        ae.shutdown()
        for association in associations:
            association.join(TIMEOUT)
