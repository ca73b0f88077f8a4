"""C-ECHO and C-STORE SCP handlers: translate DIMSE to StoreService and back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, AE, evt
from pynetdicom.sop_class import Verification

from micropacs.bridge import LoopBridge
from micropacs.errors import MicropacsError, Status, dimse_status
from services.ingest.store_service import Received, StoreService

log = logging.getLogger(__name__)


def add_contexts(ae: AE) -> None:
    """Accept every storage SOP class pynetdicom knows in every transfer syntax.

    Both roles are accepted so that C-GET requestors may take the SCP role on
    the same association (PS3.7 D.3.3.4).
    """
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(
            cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (PS3.7 9.1.5): always Success while the process runs."""
    return Status.SUCCESS


def handle_store(event: evt.Event, service: StoreService, bridge: LoopBridge) -> int:
    """C-STORE (PS3.4 B.2): Success only once the object and its event are durable."""
    request = event.request
    received = Received(
        path=Path(event.dataset_path),
        calling_ae=event.assoc.requestor.ae_title,
        called_ae=event.assoc.acceptor.ae_title,
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
    )
    try:
        bridge.run(service.store(received))
    except MicropacsError as exc:
        return exc.dimse
    except Exception as exc:
        log.exception("store failed unexpectedly")
        return dimse_status(exc)
    return Status.SUCCESS


def handlers(service: StoreService, bridge: LoopBridge) -> list[Any]:
    """The (event, handler, args) bindings of the ingest service."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [service, bridge]),
    ]
