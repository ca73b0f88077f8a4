"""C-GET and C-MOVE sub-operations that send stored files as they are.

pynetdicom's own Query/Retrieve SCP asks the handler for decoded
:class:`~pydicom.Dataset` objects and re-encodes each one: a 200 MB object is
held whole in memory and no stored byte is sent as stored. This module swaps
in a service class whose C-GET and C-MOVE send each stored file in chunks
when the peer accepted its transfer syntax, and convert it (PS3.5 10) only
when it did not. The handler bound to ``EVT_C_GET`` / ``EVT_C_MOVE`` returns
a :class:`RetrievePlan` (or the status that refuses the request) instead of a
generator; the plan's :class:`InstanceSource` opens the files.

Statuses follow PS3.4 C.4.2.1.5 (C-MOVE) and C.4.3.1.3 (C-GET): a Pending
response after each sub-operation, then Success, Warning 0xB000 when some
sub-operations failed, 0xA702 when all failed, Cancel 0xFE00 on C-CANCEL.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import pynetdicom.association
from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import uid_to_service_class

from micropacs.dicom.transcode import choose_syntax, to_syntax
from micropacs.dimse.retrieve_responses import RetrieveResponse, retrieve_response_command
from micropacs.dimse.sockets import NODELAY
from micropacs.dimse.store_scu import paused, send_stored_file, usable
from micropacs.errors import MicropacsError, Status, UnsupportedTransfer
from micropacs.ports import InstanceLocation
from micropacs.tls import ClientTls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE sends its sub-operations (PS3.4 C.4.2.1.4.1)."""

    host: str
    port: int
    ae_title: str
    tls: bool = False
    """The node speaks DICOM TLS (PS3.15 B.9): sub-operations go over TLS or not at all."""


class InstanceSource(Protocol):
    """What a C-GET or C-MOVE sends from, called in the association's thread.

    The qr service implements it over its RetrieveService; this module knows
    nothing else of qr.
    """

    def open(self, location: InstanceLocation) -> AbstractContextManager[Path]:
        """A local file with the stored bytes of ``location``, for as long as it is sent."""
        ...

    def sent(self, location: InstanceLocation, status: int) -> None:
        """One sub-operation ended with the receiver's ``status``."""
        ...

    def close(self) -> None:
        """The last sub-operation ended: release whatever :meth:`open` still holds."""
        ...


@dataclass(frozen=True)
class RetrievePlan:
    """What a C-GET or C-MOVE handler decided to send, and to whom (C-MOVE only).

    A handler that refuses the request returns its DIMSE status instead.
    """

    instances: Sequence[InstanceLocation]
    source: InstanceSource
    destination: Destination | None = None


def _accepted(assoc: Any, sop_class: str) -> set[str]:
    """The transfer syntaxes the peer accepted for ``sop_class`` as SCP of C-STORE."""
    # On a C-GET association only the contexts where we may act as SCU carry C-STOREs.
    return {
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.as_scu and cx.abstract_syntax == sop_class
    }


def send_instance(
    assoc: Any,
    loc: InstanceLocation,
    path: Path,
    msg_id: int,
    originator: tuple[str, int] | None = None,
    prefer: str = "",
) -> int:
    """Send one stored instance with C-STORE; returns the peer's status.

    Sends the file's bytes when the stored transfer syntax was accepted,
    otherwise converts it, as :func:`~micropacs.dicom.transcode.choose_syntax` says.
    A ``prefer``-red syntax the peer accepted comes first, when the object can be
    written in it (a rule forwarding in JPEG 2000 still sends a report without pixels).
    """
    kwargs: dict[str, Any] = {"msg_id": msg_id}
    if originator is not None:
        kwargs.update(originator_aet=originator[0], originator_id=originator[1])
    accepted = _accepted(assoc, loc.sop_class_uid)
    if prefer and prefer != loc.transfer_syntax_uid and prefer in accepted:
        try:
            converted = to_syntax(path, UID(prefer))
        except UnsupportedTransfer:
            pass  # not writable in it (no pixel data, say): as choose_syntax says below
        else:
            status_ds = assoc.send_c_store(converted, **kwargs)
            return int(getattr(status_ds, "Status", Status.UNABLE_TO_PROCESS))
    target = choose_syntax(loc.transfer_syntax_uid, accepted)
    if target is None:
        raise UnsupportedTransfer(
            f"peer accepted no transfer syntax we can send {loc.sop_class_uid} in "
            f"(stored as {loc.transfer_syntax_uid})"
        )
    if target == loc.transfer_syntax_uid:
        status = send_stored_file(assoc, path, msg_id, originator)
        return int(Status.UNABLE_TO_PROCESS) if status is None else status
    status_ds = assoc.send_c_store(to_syntax(path, UID(target)), **kwargs)
    return int(getattr(status_ds, "Status", Status.UNABLE_TO_PROCESS))


class _Progress:
    """Sub-operation counters of one C-GET or C-MOVE (PS3.4 C.4.2.1.5)."""

    def __init__(self, total: int) -> None:
        self.remaining, self.failed, self.warning, self.completed = total, 0, 0, 0
        self.failed_uids: list[str] = []

    def record(self, uid: str, status: int) -> None:
        self.remaining -= 1
        if status == Status.SUCCESS:
            self.completed += 1
        elif status in Status.STORE_WARNINGS:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(uid)

    def fill(self, rsp: Any, *, final: bool) -> None:
        if not final:
            rsp.NumberOfRemainingSuboperations = self.remaining
        rsp.NumberOfFailedSuboperations = self.failed + (self.remaining if final else 0)
        rsp.NumberOfWarningSuboperations = self.warning
        rsp.NumberOfCompletedSuboperations = self.completed


class RetrieveServiceClass(QueryRetrieveServiceClass):
    """Query/Retrieve service class with file-streaming C-GET and C-MOVE."""

    def _get_scp(self, req: C_GET, context: Any) -> None:
        self._retrieve(req, context, C_GET, evt.EVT_C_GET, is_move=False)

    def _move_scp(self, req: C_MOVE, context: Any) -> None:
        self._retrieve(req, context, C_MOVE, evt.EVT_C_MOVE, is_move=True)

    def _respond(self, rsp: Any, cx_id: int, status: int, failed: list[str] | None = None) -> None:
        rsp.Status = status
        if failed:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed
            ts = self.assoc._accepted_cx[cx_id].transfer_syntax[0]
            encoded = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            rsp.Identifier = BytesIO(encoded or b"")
        else:
            rsp.Identifier = None
            command = retrieve_response_command(rsp)
            if command is not None:
                message = RetrieveResponse(rsp, command, cx_id)
                evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
                for pdata in message.encode_msg(cx_id, self.dimse.maximum_pdu_size):
                    self.dimse.dul.send_pdu(pdata)
                return
        self.dimse.send_msg(rsp, cx_id)

    def _retrieve(self, req: Any, context: Any, rsp_type: Any, event: Any, is_move: bool) -> None:
        cx_id = int(context.context_id)
        rsp = rsp_type()
        rsp.MessageID = req.MessageID
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        try:
            plan = evt.trigger(
                self.assoc,
                event,
                {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled},
            )
        except Exception:
            log.exception("retrieve handler failed")
            self._respond(rsp, cx_id, Status.UNABLE_TO_PROCESS)
            return
        if not isinstance(plan, RetrievePlan):
            refused = plan if isinstance(plan, int) and plan != Status.SUCCESS else None
            self._respond(rsp, cx_id, refused or Status.UNABLE_TO_PROCESS)
            return
        if not plan.instances:
            self._respond(rsp, cx_id, Status.SUCCESS)
            return

        store_assoc = self.assoc
        if is_move:
            store_assoc = self._open_destination(plan)
            if store_assoc is None:
                rsp.NumberOfFailedSuboperations = len(plan.instances)
                self._respond(rsp, cx_id, Status.OUT_OF_RESOURCES_SUBOPS)
                return
        try:
            self._send_all(req, rsp, cx_id, plan, store_assoc, is_move)
        finally:
            plan.source.close()
            if is_move and store_assoc.is_established:
                store_assoc.release()

    def _open_destination(self, plan: RetrievePlan) -> Any:
        destination = plan.destination
        assert destination is not None
        contexts: list[PresentationContext] = []
        seen: set[tuple[str, str]] = set()
        for loc in plan.instances:
            proposals: list[list[str | UID]] = [
                [loc.transfer_syntax_uid],
                [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
            ]
            for syntaxes in proposals:
                key = (loc.sop_class_uid, ",".join(syntaxes))
                if key not in seen and len(contexts) < 128:
                    seen.add(key)
                    contexts.append(build_context(loc.sop_class_uid, syntaxes))
        where = {
            "destination": destination.ae_title,
            "host": destination.host,
            "port": destination.port,
            "tls": destination.tls,
        }
        tls_args = None
        if destination.tls:
            client = getattr(self.ae, "tls_client", None) or ClientTls()
            try:
                # The node's certificate must name the host we connect to.
                tls_args = (client.context(), destination.host)
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "move destination needs TLS and no TLS client context could be built",
                    extra={**where, "reason": type(exc).__name__},
                )
                return None
        assoc = self.ae.associate(
            destination.host,
            destination.port,
            contexts=contexts,
            ae_title=destination.ae_title,
            max_pdu=self.ae.maximum_pdu_size,  # what we accept on every association
            evt_handlers=[NODELAY],
            tls_args=tls_args,
        )
        if not assoc.is_established:
            message = "move destination refused or unreachable"
            if destination.tls:
                message += " (over TLS; nothing is sent in plain text to a TLS node)"
            log.warning(message, extra=where)
            return None
        return assoc

    def _send_all(
        self, req: Any, rsp: Any, cx_id: int, plan: RetrievePlan, store_assoc: Any, is_move: bool
    ) -> None:
        progress = _Progress(len(plan.instances))
        originator = (self.assoc.requestor.ae_title, int(req.MessageID)) if is_move else None
        # A C-MOVE's destination association is ours alone: its reactor stays paused for
        # the whole run rather than woken between two sub-operations.
        holding = paused(store_assoc) if is_move else contextlib.nullcontext()
        with holding:
            for index, loc in enumerate(plan.instances):
                if self.is_cancelled(req.MessageID):
                    progress.fill(rsp, final=False)
                    remaining = [i.sop_instance_uid for i in plan.instances[index:]]
                    self._respond(rsp, cx_id, Status.CANCEL, progress.failed_uids + remaining)
                    return
                if not self.assoc.is_established:
                    return  # the requestor went away: nobody to answer
                if not usable(store_assoc):
                    # The destination went away: what was not sent failed (PS3.4 C.4.2.1.5).
                    for lost in plan.instances[index:]:
                        progress.record(lost.sop_instance_uid, Status.OUT_OF_RESOURCES)
                        plan.source.sent(lost, Status.OUT_OF_RESOURCES)
                    break
                msg_id = (int(req.MessageID) + index + 1) % 65536 or 1
                try:
                    with plan.source.open(loc) as path:
                        status = send_instance(store_assoc, loc, path, msg_id, originator)
                except MicropacsError as exc:
                    log.warning(
                        "sub-operation failed",
                        extra={"reason": str(exc), "sop_class": loc.sop_class_uid},
                    )
                    status = exc.dimse
                except Exception:
                    log.exception("sub-operation failed", extra={"sop_class": loc.sop_class_uid})
                    status = Status.UNABLE_TO_PROCESS
                progress.record(loc.sop_instance_uid, status)
                plan.source.sent(loc, status)
                if progress.remaining:
                    progress.fill(rsp, final=False)
                    self._respond(rsp, cx_id, Status.PENDING)
        rsp.NumberOfRemainingSuboperations = None
        progress.fill(rsp, final=True)
        if progress.failed == 0 and progress.warning == 0:
            self._respond(rsp, cx_id, Status.SUCCESS)
        elif progress.completed == 0 and progress.warning == 0:
            self._respond(rsp, cx_id, Status.OUT_OF_RESOURCES_SUBOPS, progress.failed_uids)
        else:
            self._respond(rsp, cx_id, Status.WARNING_SUBOPS, progress.failed_uids)


def _service_class_for(uid: str) -> type[Any]:
    found: type[Any] = uid_to_service_class(uid)
    if found is QueryRetrieveServiceClass:
        return RetrieveServiceClass
    return found


def install() -> None:
    """Make pynetdicom use :class:`RetrieveServiceClass` for Query/Retrieve SOP classes."""
    pynetdicom.association.uid_to_service_class = _service_class_for  # type: ignore[attr-defined]
