"""C-STORE SCP handlers: translate DIMSE to StoreService and back (C-ECHO is answered by
every listener, :mod:`micropacs.dimse.verification`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

from micropacs.bridge import LoopBridge
from micropacs.dimse.access import NOT_AUTHORIZED, Permission, refused, registered_node
from micropacs.dimse.audit import note_study
from micropacs.dimse.received_digest import received_sha256
from micropacs.errors import MicropacsError, Status, dimse_status
from services.ingest.store_service import Received, StoreService, discard

log = logging.getLogger(__name__)


LOSSLESS = {
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component (Lossless Only)
    "1.2.840.10008.1.2.4.201",  # HTJ2K (Lossless Only)
    "1.2.840.10008.1.2.4.202",  # HTJ2K with RPCL Options (Lossless Only)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
}


def preferred_syntaxes() -> list[str]:
    """Every transfer syntax, in the order we pick one when a peer offers several.

    pynetdicom accepts the first of *our* list that the peer proposed in a
    context, so: lossless compressed first (keep what the modality has),
    then uncompressed, then lossy and video (accepted, never preferred over a
    lossless offer).
    """
    uncompressed = [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ]
    compressed = [UID(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in uncompressed]
    lossless = [ts for ts in compressed if ts in LOSSLESS]
    lossy = [ts for ts in compressed if ts not in LOSSLESS]
    return [*lossless, *uncompressed, *lossy]


def add_contexts(ae: AE) -> None:
    """Accept every storage SOP class pynetdicom knows in every transfer syntax.

    Both roles are accepted so that C-GET requestors may take the SCP role on
    the same association (PS3.7 D.3.3.4).
    """
    syntaxes = preferred_syntaxes()
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), syntaxes, scu_role=True, scp_role=True)


def handle_store(event: evt.Event, service: StoreService, bridge: LoopBridge) -> int:
    """C-STORE (PS3.4 B.2): Success only once the object and its event are durable (Warning
    0xB000, Coercion of Data Elements, when a routing rule changed it before it was stored);
    0x0124 Refused: Not Authorized for a node that may not store.

    Once the object is read, its study (and patient) goes into the association's audit
    record (:func:`~micropacs.dimse.audit.note_study`, one set insertion), so the record
    names it whether the store then succeeds or fails."""
    if refused(event, Permission.STORE, "C-STORE"):
        return NOT_AUTHORIZED
    request = cast(C_STORE, event.request)
    received = Received(
        path=Path(event.dataset_path),
        calling_ae=event.assoc.requestor.ae_title,
        called_ae=event.assoc.acceptor.ae_title,
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        sha256=received_sha256(event),  # hashed as it was received: nothing reads it again
        ae_group=_ae_group(event),
    )
    started = time.perf_counter()
    try:
        # Checked and described here, in the association's thread: the loop only
        # waits for durability (one hop to it, not three).
        prepared = service.prepare(received)
        note_study(event, prepared.event.study_instance_uid, prepared.event.patient_id)
        try:
            bridge.run(service.commit(prepared, started))
        except BaseException:
            discard(prepared)  # the loop may have stopped before commit began
            raise
    except MicropacsError as exc:
        return exc.dimse
    except Exception as exc:
        log.exception("store failed unexpectedly")
        return dimse_status(exc)
    return Status.COERCION_OF_DATA_ELEMENTS if prepared.coerced else Status.SUCCESS


def _ae_group(event: evt.Event) -> str:
    """The AE group of the registered node calling (decided once, at its A-ASSOCIATE-RQ,
    by :mod:`~micropacs.dimse.access`), which the routing rules may match."""
    node = registered_node(event.assoc)
    return node.ae_group if node is not None else ""


def handlers(service: StoreService, bridge: LoopBridge) -> list[Any]:
    """The (event, handler, args) bindings of the ingest service."""
    return [
        (evt.EVT_C_STORE, handle_store, [service, bridge]),
    ]
