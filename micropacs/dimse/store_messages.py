"""C-STORE's per-message work in pynetdicom done with bytes, not pydicom Datasets.

Under a C-STORE load, after our own store path, a fifth of the server's
Python time went into two pieces of pynetdicom 3.0.4 that build a pydicom
Dataset only to encode it at once: the File Meta Information written at the
head of each received file (``create_file_meta`` and pydicom's
``write_file_meta_info``, PS3.10 7.1), and each C-STORE-RSP's command set
(``primitive_to_message``, then ``encode`` twice for its group length, PS3.7
9.3.1.2, E.1). :func:`install` (once per process) gives both the same bytes
straight:

- ``pynetdicom.dimse_messages.create_file_meta`` and ``write_file_meta_info``,
  the names the chunked receive looks up: the meta of an ASCII SOP Class,
  Instance and Transfer Syntax UID is written from a template; anything else
  goes to pydicom as before;
- ``DIMSEServiceProvider.send_msg``: a C-STORE-RSP without error fields
  (Offending Element, Error Comment, Error ID) is encoded directly and sent
  as one P-DATA-TF; ``EVT_DIMSE_SENT`` handlers get a message with the
  command set's values. Every other message goes on to the ``send_msg``
  installed before.

Tests compare both with pynetdicom's and pydicom's own bytes.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any, Final

import pynetdicom.dimse_messages
from pydicom.filewriter import write_file_meta_info as pydicom_write_file_meta_info
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta as pynetdicom_create_file_meta
from pynetdicom.fsm import ACTIONS
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dimse.command_sets import NO_DATA_SET, command_set, even_ascii, whole_command
from micropacs.dimse.socket_writes import send_pieces
from micropacs.dimse.store_requests import (
    RUN_BYTES,
    file_runs,
    request_message,
    store_request_command,
)

C_STORE_RSP: Final = 0x8001

_installed = threading.Lock()
_done = False


class FileMeta:
    """What pynetdicom's ``create_file_meta`` is asked for a received data set."""

    __slots__ = ("sop_class_uid", "sop_instance_uid", "transfer_syntax")

    def __init__(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = transfer_syntax


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One File Meta element, Explicit VR Little Endian (PS3.10 7.1, PS3.5 7.1.2)."""
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta_bytes(meta: FileMeta) -> bytes | None:
    """The File Meta Information pydicom writes for ``meta`` with pynetdicom's
    implementation UID and version, or None when it must write it itself."""
    values = [
        even_ascii(str(meta.sop_class_uid), b"\0"),
        even_ascii(str(meta.sop_instance_uid), b"\0"),
        even_ascii(str(meta.transfer_syntax), b"\0"),
        even_ascii(PYNETDICOM_IMPLEMENTATION_UID, b"\0"),
        even_ascii(PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
    ]
    if any(value is None for value in values):
        return None
    sop_class, instance, syntax, implementation, version = (v or b"" for v in values)
    body = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", sop_class),
            _meta_element(0x0003, b"UI", instance),
            _meta_element(0x0010, b"UI", syntax),
            _meta_element(0x0012, b"UI", implementation),
            _meta_element(0x0013, b"SH", version),
        ]
    )
    return _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def create_file_meta(
    *,
    sop_class_uid: Any,
    sop_instance_uid: Any,
    transfer_syntax: Any,
    implementation_uid: Any = PYNETDICOM_IMPLEMENTATION_UID,
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION,
) -> Any:
    """pynetdicom's ``create_file_meta``, deferred to :func:`write_file_meta_info`."""
    if (
        implementation_uid != PYNETDICOM_IMPLEMENTATION_UID
        or implementation_version != PYNETDICOM_IMPLEMENTATION_VERSION
        or not all(isinstance(v, str) for v in (sop_class_uid, sop_instance_uid, transfer_syntax))
    ):
        return pynetdicom_create_file_meta(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax=transfer_syntax,
            implementation_uid=implementation_uid,
            implementation_version=implementation_version,
        )
    return FileMeta(sop_class_uid, sop_instance_uid, transfer_syntax)


def write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """pydicom's ``write_file_meta_info``, from the template for a :class:`FileMeta`."""
    if isinstance(file_meta, FileMeta):
        encoded = file_meta_bytes(file_meta)
        if encoded is not None:
            fp.write(encoded)
            return
        file_meta = pynetdicom_create_file_meta(
            sop_class_uid=UID(file_meta.sop_class_uid),
            sop_instance_uid=UID(file_meta.sop_instance_uid),
            transfer_syntax=UID(file_meta.transfer_syntax),
        )
    pydicom_write_file_meta_info(fp, file_meta, enforce_standard)


def store_response_command(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP without error fields, as pynetdicom encodes it
    (Implicit VR Little Endian, PS3.7 9.3.1.2, E.1), or None for any other response."""
    if (
        type(primitive) is not C_STORE
        or primitive.MessageIDBeingRespondedTo is None
        or primitive.Status is None
        or primitive.OffendingElement is not None
        or primitive.ErrorComment is not None
        or getattr(primitive, "ErrorID", None) is not None
    ):
        return None
    elements: list[tuple[int, bytes]] = []
    if primitive.AffectedSOPClassUID is not None:
        sop_class = even_ascii(str(primitive.AffectedSOPClassUID), b"\0")
        if sop_class is None:
            return None
        elements.append((0x0002, sop_class))
    elements += [
        (0x0100, struct.pack("<H", C_STORE_RSP)),
        (0x0120, struct.pack("<H", int(primitive.MessageIDBeingRespondedTo))),
        (0x0800, struct.pack("<H", NO_DATA_SET)),
        (0x0900, struct.pack("<H", int(primitive.Status))),
    ]
    if primitive.AffectedSOPInstanceUID is not None:
        instance = even_ascii(str(primitive.AffectedSOPInstanceUID), b"\0")
        if instance is None:
            return None
        elements.append((0x1000, instance))
    return command_set(elements)


class StoreResponse:
    """A C-STORE-RSP sent from its encoded command set: what ``EVT_DIMSE_SENT`` handlers
    read of it (``command_set``'s values, the message's name) and its P-DATA."""

    message_name: Final = "C_STORE_RSP"

    def __init__(self, primitive: C_STORE, command: bytes, context_id: int) -> None:
        self.context_id = context_id
        self.command_set = SimpleNamespace(
            AffectedSOPClassUID=primitive.AffectedSOPClassUID,
            CommandField=C_STORE_RSP,
            MessageIDBeingRespondedTo=primitive.MessageIDBeingRespondedTo,
            CommandDataSetType=NO_DATA_SET,
            Status=primitive.Status,
            AffectedSOPInstanceUID=primitive.AffectedSOPInstanceUID,
        )
        self.data_set = None
        self._command = command

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        """One P-DATA with the whole command set (PS3.8 9.3.5)."""
        return whole_command(context_id, self._command)


class PDataRun(P_DATA):
    """Several P-DATA-TF PDUs already encoded, sent by the DUL in one state machine
    pass and one send (PS3.8 9.3.5: each PDU within the peer's Maximum Length), as the
    pieces they were built from (:func:`~micropacs.dimse.socket_writes.send_pieces`)."""

    def __init__(self, pieces: Sequence[bytes | memoryview]) -> None:
        super().__init__()
        self.pieces = pieces

    @property
    def encoded(self) -> bytes:
        """The PDUs as one byte string."""
        return b"".join(self.pieces)


def p_data_tf(pdvs: list[tuple[int, bytes]]) -> bytes:
    """A P-DATA-TF PDU of ``pdvs`` (context ID, message control header + fragment)."""
    items = b"".join(struct.pack(">IB", len(value) + 1, context) + value for context, value in pdvs)
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


def runs(pdatas: Iterator[P_DATA], limit: int = RUN_BYTES) -> Iterator[PDataRun]:
    """The P-DATA primitives of one message as runs of encoded PDUs of about ``limit``."""
    pending: list[bytes] = []
    size = 0
    for pdata in pdatas:
        pdu = p_data_tf(pdata.presentation_data_value_list)
        pending.append(pdu)
        size += len(pdu)
        if size >= limit:
            yield PDataRun(pending)
            pending, size = [], 0
    if pending:
        yield PDataRun(pending)


def send_p_data(dul: Any) -> str:
    """The state machine's DT-1 (PS3.8 9.2, Sta6 + Evt9): send the P-DATA the local
    user queued, a :class:`PDataRun` in one send."""
    primitive = dul.to_provider_queue.get(False)
    if isinstance(primitive, PDataRun):
        if dul.socket is not None:
            send_pieces(dul.socket, primitive.pieces)
        return "Sta6"
    dul._send(P_DATA_TF(primitive))
    return "Sta6"


def _sending(previous: Callable[..., None]) -> Callable[..., None]:
    def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
        """pynetdicom's ``send_msg``: a plain C-STORE-RSP encoded from its values, a
        C-STORE request's P-DATA handed over in runs."""
        if type(primitive) is C_STORE and primitive.MessageIDBeingRespondedTo is None:
            if self.assoc.get_handlers(evt.EVT_PDU_SENT):
                previous(self, primitive, context_id)  # they want every PDU on its own
                return
            from_file = getattr(primitive, "_dataset_path", None)
            command = store_request_command(primitive) if from_file else None
            if from_file and command is not None:
                sent = request_message(primitive, context_id)
                evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": sent})
                path, offset = from_file
                for pieces in file_runs(command, path, offset, context_id, self.maximum_pdu_size):
                    self.dul.send_pdu(PDataRun(pieces))
                return
            message = C_STORE_RQ()
            message.primitive_to_message(primitive)
            message.context_id = context_id
            evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
            for run in runs(message.encode_msg(context_id, self.maximum_pdu_size)):
                self.dul.send_pdu(run)
            return
        command = store_response_command(primitive)
        if command is None or len(command) > 4000:
            previous(self, primitive, context_id)
            return
        response = StoreResponse(primitive, command, context_id)
        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": response})
        for pdata in response.encode_msg(context_id, self.maximum_pdu_size):
            self.dul.send_pdu(pdata)

    return send_msg


def install() -> None:
    """Install the byte-level C-STORE pieces in pynetdicom, once per process."""
    global _done
    with _installed:
        if _done:
            return
        messages: Any = pynetdicom.dimse_messages
        messages.create_file_meta = create_file_meta
        messages.write_file_meta_info = write_file_meta_info
        DIMSEServiceProvider.send_msg = _sending(DIMSEServiceProvider.send_msg)  # type: ignore[method-assign]
        description, _, state = ACTIONS["DT-1"]
        ACTIONS["DT-1"] = (description, send_p_data, state)
        _done = True
