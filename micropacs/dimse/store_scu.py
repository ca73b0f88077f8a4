"""One stored file sent with C-STORE from its bytes, without pynetdicom's primitives.

``Association.send_c_store(path)`` of pynetdicom 3.0.4, for a file sent as stored, reads
the File Meta into a Dataset, builds and validates a C-STORE primitive (every UID through
a regular expression), and turns the C-STORE-RSP into a Dataset to read its Status.
Profiled in a router forwarding CT images to a DCMTK storescp, those three were half of
the sending thread's Python time. :func:`send_stored_file` does what ``send_c_store``
does for such a file (PS3.4 B.2.3, PS3.7 9.1.1) with what this package already has: the
meta's UIDs and the data set's offset from the file's first bytes
(:func:`~micropacs.dimse.store_requests.meta_of`), the command set and PDUs from bytes,
pynetdicom's own presentation context choice, reactor pause and response queue, and the
Status read off the response primitive. Anything unusual goes to ``send_c_store``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.utils import set_ae

from micropacs.dimse.store_messages import PDataRun
from micropacs.dimse.store_requests import (
    META_READ,
    StoreRequest,
    file_runs,
    meta_of,
    request_message,
    store_request_command,
)

log = logging.getLogger(__name__)

PRIORITY_MEDIUM = 2


def send_stored_file(
    assoc: Any, path: Path, msg_id: int, originator: tuple[str, int] | None = None
) -> int | None:
    """C-STORE the file at ``path`` as stored on ``assoc``; the response's Status, or
    None when none came (the association is aborted then, as pynetdicom does) or the
    association had already ended (nothing is sent then)."""
    if not usable(assoc):
        return None
    if assoc.get_handlers(evt.EVT_PDU_SENT):
        return _by_pynetdicom(assoc, path, msg_id, originator)
    with Path(path).open("rb") as fp:
        found = meta_of(fp.read(META_READ))
    if found is None or len(found[0]) != 3:
        return _by_pynetdicom(assoc, path, msg_id, originator)
    uids, offset = found
    title = originator_title(originator[0]) if originator else None
    request = StoreRequest(
        AffectedSOPClassUID=uids["MediaStorageSOPClassUID"],
        AffectedSOPInstanceUID=uids["MediaStorageSOPInstanceUID"],
        MessageID=msg_id,
        Priority=PRIORITY_MEDIUM,
        MoveOriginatorApplicationEntityTitle=title,
        MoveOriginatorMessageID=originator[1] if originator else None,
    )
    command = store_request_command(request)
    if command is None:
        return _by_pynetdicom(assoc, path, msg_id, originator)
    context = assoc._get_valid_context(
        request.AffectedSOPClassUID, uids["TransferSyntaxUID"], "scu", allow_conversion=False
    )
    context_id = int(context.context_id)
    # As send_c_store: the association's reactor is paused while we wait for our answer
    # (unless the caller holds it paused for a run of them, :func:`paused`).
    with paused(assoc) if assoc._reactor_checkpoint.is_set() else contextlib.nullcontext():
        evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": request_message(request, context_id)})
        dimse = assoc.dimse
        for pieces in file_runs(command, Path(path), offset, context_id, dimse.maximum_pdu_size):
            assoc.dul.send_pdu(PDataRun(pieces))
        _, response = dimse.get_msg(block=True)
    if response is not None and response.is_valid_response:
        return int(response.Status)
    # Aborting waits for the association's reactor to end: it must not be held paused.
    assoc._reactor_checkpoint.set()
    if response is None:
        assoc._handle_no_response()
    else:
        log.error("invalid C-STORE response from the peer; aborting the association")
        assoc.abort()
    return None


def usable(assoc: Any) -> bool:
    """Whether a C-STORE may be sent on ``assoc``: established, and no A-ABORT waiting.

    An A-ABORT the peer sent in place of a C-STORE response is queued by the time that
    C-STORE returns, but the association's reactor (paused, or not yet scheduled) may not
    have seen it; a C-STORE sent then would wait for an answer that never comes.
    """
    return bool(
        assoc.is_established
        and not assoc.is_aborted
        and assoc.dul.is_alive()
        and not assoc.acse.is_aborted()
    )


@contextlib.contextmanager
def paused(assoc: Any) -> Iterator[None]:
    """The association's reactor paused, as ``send_c_store`` pauses it for each message:
    held over a run of C-STOREs, the reactor does not wake between two of them (a pass of
    its loop, and the sender's wait for it to pause again, for every instance sent). An
    A-ABORT meanwhile still ends the wait for an answer (pynetdicom queues an empty
    message for it)."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


def originator_title(title: str) -> str | None:
    """A Move Originator AE Title as pynetdicom's primitive keeps it: None when it is no
    AE title (PS3.5 6.2), as pynetdicom drops it."""
    try:
        kept: str | None = set_ae(title, "Move Originator AE Title")
    except ValueError:
        return None
    return kept


def _by_pynetdicom(
    assoc: Any, path: Path, msg_id: int, originator: tuple[str, int] | None
) -> int | None:
    kwargs: dict[str, Any] = {"msg_id": msg_id}
    if originator is not None:
        kwargs.update(originator_aet=originator[0], originator_id=originator[1])
    status = getattr(assoc.send_c_store(path, **kwargs), "Status", None)
    return None if status is None else int(status)
