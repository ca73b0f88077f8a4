"""Nothing a peer sends kills an association's reactor thread: it ends the association.

pynetdicom 3.0.4 runs its state machine (PS3.8 9.2) in each association's
reactor thread, and an exception raised by an action escapes that thread:
it dies with a traceback on stderr, sends no A-ABORT, and leaves behind
whatever the action had started. Two ways a peer got there:

- the presentation data values of P-DATA (PS3.8 9.3.5, PS3.7 E.2) are
  assembled into a DIMSE message inside the state machine; a message that
  does not decode (a value without its message control header, a command
  set that is not one, a Command Field pynetdicom does not know, a C-STORE
  on a presentation context that was not accepted) raised, and a C-STORE's
  temporary file (the start of a dataset: patient data) stayed in the data
  directory. pynetdicom already treats a message it cannot turn into a
  primitive as an invalid PDU (Evt19: A-ABORT, then close, PS3.8 9.2.3);
  :func:`receive_primitive` does the same for one it cannot decode, and
  deletes the file; so does :func:`message_to_primitive` when pynetdicom
  aborts a message it decoded but cannot convert (the data set, received
  whole, reached no handler to delete it), and so does a second command set
  in one message, which made pynetdicom start a new file and forget the
  first (deleted by nobody, even when the C-STORE succeeded), or complete
  a message without data set whose primitive carried the file to a handler
  that has none to delete;
- a connection that closed or aborted in the middle of a C-STORE data set
  left the part received in the data directory: :func:`do_action` deletes
  it when the connection ends;
- a connection whose first PDU is not an acceptable A-ASSOCIATE-RQ (another
  PDU, or a request of another protocol version) is aborted or rejected by
  the state machine, but the association thread went on waiting for the
  request, holding its association slot until the ACSE timeout (30 s; 64
  such connections a minute locked every modality out): :func:`do_action`
  wakes it once the connection is closing;
- a peer that sends anything right after its A-ASSOCIATE-RQ, before our
  answer, is aborted (Sta13, awaiting the close); our A-ASSOCIATE-AC, still
  on its way from the association thread, then met a state with no
  transition for it (PS3.8 table 9-10 leaves those cells empty) and raised
  InvalidEventError. :func:`do_action` drops what the local user asks once
  the connection is closing or closed (Sta13, Sta1): there is no one to
  send it to.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from pathlib import Path
from typing import Any, Final

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dimse.received_store_responses import store_response_of
from micropacs.dimse.store_messages import StoreResponse

log = logging.getLogger(__name__)

_receive = DIMSEServiceProvider.receive_primitive
_to_primitive = DIMSEMessage.message_to_primitive
_do_action = StateMachine.do_action

LOCAL_EVENTS: Final = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})
"""The events of the local user's primitives (PS3.8 table 9-10): requests and answers
the association thread hands to its reactor."""
_CLOSING: Final = frozenset({"Sta1", "Sta13"})
_FAILED: Final = "_micropacs_failed"


def receive_primitive(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
    """Decode ``primitive`` one presentation data value at a time as pynetdicom does (up
    to the end of one message, what follows ignored); if that fails, queue Evt19 (the
    state machine sends A-ABORT and closes) and discard the message in progress. A value
    that replaces the message's data set file (a second command set) gets the replaced
    file deleted."""
    for context_id, value in primitive.presentation_data_value_list:
        if self.message is None:
            response = store_response_of(value, context_id)
            if response is not None:
                received = StoreResponse(response, value[1:], context_id)
                evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": received})
                self.msg_queue.put((context_id, response))
                return  # a whole message: pynetdicom ignores what else the P-DATA holds
        single = P_DATA()
        single.presentation_data_value_list = [[context_id, value]]  # type: ignore[list-item]
        before: Path | None = getattr(self.message, "_data_set_path", None)
        before_file = getattr(self.message, "_data_set_file", None)
        try:
            _receive(self, single)
        except Exception as exc:  # noqa: BLE001 - whatever fails to decode is an invalid PDU
            log.warning(
                "undecodable DIMSE message: association aborted",
                extra={"error": type(exc).__name__},
            )
            message, self.message = self.message, None
            _discard(message)
            _close(before_file)
            _unlink(before)
            self.dul.event_queue.put("Evt19")
            return
        message = self.message
        if message is None:
            if before is not None and value[:1] and value[0] & 1:
                # Completed by a command set (so one without a data set, a C-ECHO):
                # the C-STORE whose data set was being received is abandoned.
                _close(before_file)
                _unlink(before)
            return  # a whole message: pynetdicom ignores what else the P-DATA holds
        if getattr(message, _FAILED, False):
            return  # pynetdicom queued Evt19: the association ends
        if before is not None and message._data_set_path != before:
            _close(before_file)
            _unlink(before)


def message_to_primitive(self: DIMSEMessage) -> Any:
    """pynetdicom's conversion; when it fails (pynetdicom then queues Evt19), the file the
    data set was received into is deleted first."""
    try:
        return _to_primitive(self)
    except Exception:
        _discard(self)
        setattr(self, _FAILED, True)
        raise


def _discard(message: Any) -> None:
    """Close and delete the file a C-STORE data set was being received into."""
    stream = getattr(message, "_data_set_file", None)
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()
    _unlink(getattr(message, "_data_set_path", None))


def _close(stream: Any) -> None:
    """Close a data set file pynetdicom let go of: dropped unclosed, it is closed only
    when collected, with a ResourceWarning if its file object goes first."""
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def do_action(self: StateMachine, event: str) -> None:
    """Run the action of ``event``, except a local primitive's on a closing connection,
    which is taken off the queue and dropped; wake the association thread of a connection
    that will never deliver its A-ASSOCIATE-RQ."""
    state = self.current_state
    if event in LOCAL_EVENTS and state in _CLOSING and (event, state) not in TRANSITION_TABLE:
        with contextlib.suppress(queue.Empty):
            self.dul.to_provider_queue.get(False)
        log.debug("primitive dropped: the connection is closing", extra={"event": event})
        return
    _do_action(self, event)
    if self.current_state == "Sta1" and state != "Sta1":
        # The connection is gone: a C-STORE data set still arriving never will.
        dimse = self.dul.assoc.dimse
        message, dimse.message = dimse.message, None
        _discard(message)
    if state == "Sta2" and self.current_state in _CLOSING and self.dul.assoc.is_acceptor:
        # Aborted (AA-1), rejected for its protocol version (AE-6) or closed (AA-2, AA-5)
        # before any request: its thread waits for one, holding a slot until the ACSE timeout.
        waiting: Any = self.dul.to_user_queue
        waiting.put(None)


def install() -> None:
    """Make every association decode DIMSE messages and run its state machine as above."""
    DIMSEServiceProvider.receive_primitive = receive_primitive  # type: ignore[method-assign]
    DIMSEMessage.message_to_primitive = message_to_primitive  # type: ignore[method-assign]
    StateMachine.do_action = do_action  # type: ignore[method-assign]
