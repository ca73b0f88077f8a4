"""C-FIND, C-GET and C-MOVE SCP handlers: translate DIMSE to the qr services and back."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt

from micropacs.bridge import LoopBridge
from micropacs.dicom.charset import response_charset
from micropacs.dicom.json_model import to_json
from micropacs.dimse import find_responses
from micropacs.dimse.access import NOT_AUTHORIZED, Permission, refused
from micropacs.dimse.find_responses import JsonIdentifier
from micropacs.dimse.flow import wait_for_peer
from micropacs.dimse.opened_ahead import OpenedAhead
from micropacs.dimse.retrieve_scp import Destination, RetrievePlan
from micropacs.errors import MicropacsError, Status
from micropacs.ports import InstanceLocation
from services.qr.metrics import QrMetrics
from services.qr.query_service import QueryService
from services.qr.retrieve_service import RetrieveService

log = logging.getLogger(__name__)

IDENTIFIER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
QR_CLASSES = [
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root - MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root - GET
    STUDY_ROOT_FIND,  # Study Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root - MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root - GET
]


def add_contexts(ae: AE) -> None:
    """Accept the Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2)."""
    for sop_class in QR_CLASSES:
        ae.add_supported_context(sop_class, IDENTIFIER_SYNTAXES)


def _identifier(event: evt.Event) -> dict[str, Any]:
    try:
        return to_json(event.identifier)
    except Exception as exc:
        # Fixed text: a decoder's message may quote the identifier's values.
        raise MicropacsError(f"identifier cannot be decoded ({type(exc).__name__})") from exc


def handle_find(
    event: evt.Event, service: QueryService, bridge: LoopBridge
) -> Iterator[tuple[int, JsonIdentifier | Dataset | None]]:
    """C-FIND (PS3.4 C.4.1.2): one Pending response per match, then Success;
    0x0124 Refused: Not Authorized for a node that may not query.

    Once :func:`~micropacs.dimse.find_responses.install` ran, each match is yielded
    as a :class:`~micropacs.dimse.find_responses.JsonIdentifier`, which pynetdicom
    then encodes without a Dataset; otherwise as a Dataset."""
    if refused(event, Permission.QUERY, "C-FIND"):
        yield NOT_AUTHORIZED, None
        return
    try:
        request = event.identifier
        requested_charset = request.get("SpecificCharacterSet")
        study_root = event.request.AffectedSOPClassUID == STUDY_ROOT_FIND
        matches = bridge.run(service.find(_identifier(event), study_root=study_root))
    except MicropacsError as exc:
        log.warning("C-FIND refused", extra={"reason": str(exc)})
        yield exc.dimse, None
        return
    except Exception as exc:
        # No traceback at INFO: an exception's text may quote the identifier's values.
        log.error("C-FIND failed: %s", type(exc).__name__)
        log.debug("C-FIND failure", exc_info=True)
        yield Status.UNABLE_TO_PROCESS, None
        return
    direct = find_responses.installed()
    for match in matches:
        wait_for_peer(event.assoc)  # so that a C-CANCEL is read before the next match
        if event.is_cancelled:
            yield Status.CANCEL, None
            return
        identifier = JsonIdentifier(match, response_charset(match, requested_charset))
        # Encoded straight from the catalog's JSON where pynetdicom was told how.
        yield Status.PENDING, identifier if direct else identifier.dataset()


class BridgedSource:
    """The qr service's :class:`InstanceSource`: its RetrieveService, called from the
    association's thread through the loop a batch of ``locations`` ahead
    (:class:`~micropacs.dimse.opened_ahead.OpenedAhead`), counting what each
    sub-operation did."""

    def __init__(
        self,
        service: RetrieveService,
        bridge: LoopBridge,
        metrics: QrMetrics,
        operation: str,
        locations: Sequence[InstanceLocation] = (),
    ) -> None:
        self._opened = OpenedAhead(bridge, locations, service.current_path)
        self._metrics = metrics
        self._operation = operation

    def open(self, location: InstanceLocation) -> AbstractContextManager[Path]:
        return self._opened.open(location)

    def close(self) -> None:
        self._opened.close()

    def sent(self, location: InstanceLocation, status: int) -> None:
        self._metrics.suboperations.labels(
            operation=self._operation, status=f"0x{status:04X}"
        ).inc()
        if status == Status.SUCCESS:
            self._metrics.retrieved_bytes.inc(location.size)


def handle_get(
    event: evt.Event, service: RetrieveService, bridge: LoopBridge, metrics: QrMetrics
) -> RetrievePlan | int:
    """C-GET (PS3.4 C.4.3): send the named instances over this association;
    0x0124 Refused: Not Authorized for a node that may not retrieve."""
    if refused(event, Permission.RETRIEVE, "C-GET"):
        return NOT_AUTHORIZED
    try:
        locations = bridge.run(service.locate(_identifier(event)))
    except MicropacsError as exc:
        log.warning("C-GET refused", extra={"reason": str(exc)})
        return exc.dimse
    return RetrievePlan(locations, BridgedSource(service, bridge, metrics, "get", locations))


def handle_move(
    event: evt.Event, service: RetrieveService, bridge: LoopBridge, metrics: QrMetrics
) -> RetrievePlan | int:
    """C-MOVE (PS3.4 C.4.2): send the named instances to a registered node.

    0x0124 Refused: Not Authorized for a requestor that may not retrieve;
    0xA801 Move Destination Unknown for a node that may not be a destination.
    """
    if refused(event, Permission.RETRIEVE, "C-MOVE"):
        return NOT_AUTHORIZED
    try:
        node = bridge.run(service.destination(str(event.move_destination or "")))
        if not Permission.MOVE_DESTINATION.granted(node):
            log.warning("C-MOVE refused: the destination may not receive moves")
            return Status.MOVE_DESTINATION_UNKNOWN
        locations = bridge.run(service.locate(_identifier(event)))
    except MicropacsError as exc:
        log.warning("C-MOVE refused", extra={"reason": str(exc)})
        return exc.dimse
    return RetrievePlan(
        locations,
        BridgedSource(service, bridge, metrics, "move", locations),
        Destination(node.host, node.port, node.ae_title, tls=node.tls),
    )


def handlers(
    query: QueryService, retrieve: RetrieveService, bridge: LoopBridge, metrics: QrMetrics
) -> list[Any]:
    """The (event, handler, args) bindings of the qr service."""
    return [
        (evt.EVT_C_FIND, handle_find, [query, bridge]),
        (evt.EVT_C_GET, handle_get, [retrieve, bridge, metrics]),
        (evt.EVT_C_MOVE, handle_move, [retrieve, bridge, metrics]),
    ]
