"""C-FIND Pending responses sent without a pydicom Dataset per match (PS3.7 9.1.2, 9.3.2.2).

pynetdicom 3.0.4 spends about half a millisecond on each Pending C-FIND-RSP
beyond its identifier: it builds a command set Dataset of the response
primitive, encodes it twice (once for its group length) and fragments the
message into P-DATA. The handler's identifier costs as much again when it
is a Dataset built from the catalog's DICOM JSON and encoded by pydicom.
:func:`install` (once per process) changes two names pynetdicom looks up:

- ``pynetdicom.service_class.encode``, which the Query/Retrieve SCP calls on
  every identifier a handler yields: a :class:`JsonIdentifier` is encoded by
  :func:`~micropacs.dicom.identifier_encoding.encode_identifier` in the
  context's transfer syntax, or, when that declines, built into a Dataset
  and encoded by pynetdicom as before; anything else goes to pynetdicom;
- ``DIMSEServiceProvider.send_msg``: a Pending C-FIND-RSP with an identifier
  and no error fields reuses the command set encoded for the previous
  Pending response of the same request (the same Message ID Being Responded
  To, SOP Class and status: PS3.7 Table 9.1-3 leaves nothing else in it), and
  goes in one P-DATA-TF PDU of two PDVs, command set and identifier, when it
  fits the peer's maximum length (PS3.8 9.3.5 allows a PDU one or more PDVs;
  pynetdicom sends each in a PDU of its own, so each response cost two passes
  of its reactor and two sends); otherwise it is fragmented as pynetdicom
  fragments it. ``EVT_DIMSE_SENT`` still fires with the message. Every other
  message goes to pynetdicom's ``send_msg``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import lru_cache
from io import BytesIO
from typing import Any, Final

import pynetdicom.service_class
from pydicom import Dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode as pynetdicom_encode
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dicom.identifier_encoding import encode_identifier
from micropacs.dicom.json_model import DicomJson, from_json

PDV_HEADER: Final = 6
"""Bytes of a Presentation Data Value Item before its fragment: length, context ID and
message control header (PS3.8 9.3.5.1, E.2)."""
PENDING_STATUSES: Final = frozenset({0xFF00, 0xFF01})
"""C-FIND Pending statuses (PS3.4 C.4.1.1.4): the responses that carry an identifier."""

_send_msg = DIMSEServiceProvider.send_msg
_installed = threading.Event()


class JsonIdentifier:
    """A match to answer as a C-FIND Pending response's identifier: the catalog's DICOM
    JSON and the Specific Character Set chosen for it (None: the default repertoire)."""

    __slots__ = ("charset", "data")

    def __init__(self, data: DicomJson, charset: str | None) -> None:
        self.data = data
        self.charset = charset or None

    def dataset(self) -> Dataset:
        """The identifier as a pydicom Dataset, for what the direct encoding declines."""
        ds = from_json(self.data)
        if self.charset:
            ds.SpecificCharacterSet = self.charset
        return ds


def encode(
    ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's ``encode`` that also takes a :class:`JsonIdentifier`."""
    if isinstance(ds, JsonIdentifier):
        encoded = encode_identifier(
            ds.data,
            ds.charset,
            implicit_vr=is_implicit_vr,
            little_endian=is_little_endian,
            deflated=deflated,
        )
        if encoded is not None:
            return encoded
        ds = ds.dataset()
    return pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


class PendingFindResponse(C_FIND_RSP):
    """A Pending C-FIND-RSP message with an already encoded command set and identifier.

    Its ``command_set`` is shared by the responses of one request: what an
    ``EVT_DIMSE_SENT`` handler gets is to be read, not changed.
    """

    def __init__(self, command_set: Dataset, encoded_command_set: bytes, identifier: bytes) -> None:
        # Not C_FIND_RSP.__init__: it builds a command set Dataset element by element.
        self.context_id: int | None = None
        self.encoded_command_set = BytesIO()
        self.command_set = command_set
        self.data_set: BytesIO | None = BytesIO(identifier)
        self._data_set_path = None
        self._data_set_file = None
        self._command = encoded_command_set
        self._identifier = identifier

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        """The message as P-DATA primitives (PS3.8 E.2): one holding the command set and
        the identifier as two PDVs when both fit in ``max_pdu_length`` (the peer's
        Maximum Length, PS3.8 D.1; 0 for no limit), otherwise fragmented as pynetdicom
        fragments them."""
        self.context_id = context_id
        whole = len(self._command) + len(self._identifier) + 2 * PDV_HEADER
        if not max_pdu_length or whole <= max_pdu_length:
            pdata = P_DATA()
            pdvs = pdata.presentation_data_value_list
            pdvs.append((context_id, b"\x03" + self._command))
            pdvs.append((context_id, b"\x02" + self._identifier))
            yield pdata
            return
        for value, more, last in (
            (self._command, b"\x01", b"\x03"),
            (self._identifier, b"\x00", b"\x02"),
        ):
            fragments = list(self._generate_pdv_fragments(value, max_pdu_length))
            for number, fragment in enumerate(fragments, 1):
                pdata = P_DATA()
                header = last if number == len(fragments) else more
                pdata.presentation_data_value_list.append((context_id, header + fragment))
                yield pdata


@lru_cache(maxsize=256)
def _command_set(message_id: int, sop_class: str, status: int) -> tuple[Dataset, bytes]:
    """The command set of a Pending C-FIND-RSP and its encoding (Implicit VR Little
    Endian, PS3.7 6.3.1), built once by pynetdicom's own code."""
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.Status = status
    primitive.Identifier = BytesIO(b"\0")
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    encoded = pynetdicom_encode(message.command_set, True, True)
    if not encoded:
        raise ValueError("the command set of a C-FIND response cannot be encoded")
    return message.command_set, encoded


def pending_message(
    message_id: int, sop_class: str, identifier: bytes, status: int = 0xFF00
) -> PendingFindResponse:
    """The DIMSE message of a Pending C-FIND-RSP (PS3.7 9.3.2.2) carrying ``identifier``."""
    command_set, encoded = _command_set(message_id, str(sop_class), status)
    return PendingFindResponse(command_set, encoded, identifier)


def _pending_identifier(primitive: Any) -> bytes | None:
    """The identifier of a Pending C-FIND response with nothing else but the fixed fields."""
    if type(primitive) is not C_FIND or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status not in PENDING_STATUSES or primitive.AffectedSOPClassUID is None:
        return None
    if primitive.OffendingElement is not None or primitive.ErrorComment is not None:
        return None
    identifier = primitive.Identifier
    if not isinstance(identifier, BytesIO):
        return None
    value = identifier.getvalue()
    return value or None


def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """pynetdicom's ``send_msg``, a Pending C-FIND response sent as a PendingFindResponse."""
    identifier = _pending_identifier(primitive)
    if identifier is None:
        _send_msg(self, primitive, context_id)
        return
    message = pending_message(
        primitive.MessageIDBeingRespondedTo,
        primitive.AffectedSOPClassUID,
        identifier,
        int(primitive.Status),
    )
    message.context_id = context_id
    evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
    for pdata in message.encode_msg(context_id, self.maximum_pdu_size):
        self.dul.send_pdu(pdata)


def installed() -> bool:
    """Whether :func:`install` ran in this process (handlers may yield JsonIdentifiers)."""
    return _installed.is_set()


def install() -> None:
    """Make pynetdicom encode :class:`JsonIdentifier` identifiers and send Pending
    C-FIND responses with a reused command set (see the module's docstring)."""
    pynetdicom.service_class.encode = encode  # type: ignore[attr-defined]
    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]
    _installed.set()
