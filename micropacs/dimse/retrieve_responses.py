"""C-GET and C-MOVE responses without an Identifier, encoded from their values.

A C-GET or C-MOVE answers each sub-operation with a Pending response (PS3.4 C.4.2.1.5,
C.4.3.1.4) counting what is left, completed, failed and warned. pynetdicom 3.0.4 builds
each as a pydicom Dataset and encodes it twice for its group length (PS3.7 9.3.1.1, E.1):
profiled on a C-GET of 500 CT images, more of the association's Python time than the
C-STORE sub-operations themselves. :func:`retrieve_response_command` gives the same
bytes from the primitive's values, and :class:`RetrieveResponse` sends them as one PDV
(the command set is far shorter than any Maximum Length, PS3.8 D.1) with what
``EVT_DIMSE_SENT`` handlers read of a message. A response with an Identifier (the Failed
SOP Instance UID List), an Error Comment or an Offending Element is left to pynetdicom.
Tests compare the bytes with pynetdicom's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Final

from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dimse.command_sets import NO_DATA_SET, command_set, even_ascii, whole_command

COMMAND_FIELDS: Final = {C_GET: (0x8010, "C_GET_RSP"), C_MOVE: (0x8021, "C_MOVE_RSP")}
COUNTS: Final = (
    (0x1020, "NumberOfRemainingSuboperations"),
    (0x1021, "NumberOfCompletedSuboperations"),
    (0x1022, "NumberOfFailedSuboperations"),
    (0x1023, "NumberOfWarningSuboperations"),
)


def retrieve_response_command(primitive: Any) -> bytes | None:
    """The command set of a C-GET-RSP or C-MOVE-RSP without a data set, as pynetdicom
    encodes it (Implicit VR Little Endian), or None when pynetdicom should."""
    field = COMMAND_FIELDS.get(type(primitive))
    if (
        field is None
        or primitive.MessageIDBeingRespondedTo is None
        or primitive.Status is None
        or primitive.Identifier is not None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
    ):
        return None
    elements: list[tuple[int, bytes]] = []
    if primitive.AffectedSOPClassUID is not None:
        sop_class = even_ascii(str(primitive.AffectedSOPClassUID), b"\0")
        if sop_class is None:
            return None
        elements.append((0x0002, sop_class))
    elements += [
        (0x0100, struct.pack("<H", field[0])),
        (0x0120, struct.pack("<H", int(primitive.MessageIDBeingRespondedTo))),
        (0x0800, struct.pack("<H", NO_DATA_SET)),
        (0x0900, struct.pack("<H", int(primitive.Status))),
    ]
    for tag, keyword in COUNTS:
        count = getattr(primitive, keyword)
        if count is not None:
            elements.append((tag, struct.pack("<H", int(count))))
    return command_set(elements)


class RetrieveResponse:
    """A C-GET-RSP or C-MOVE-RSP sent from its encoded command set: what
    ``EVT_DIMSE_SENT`` handlers read of it and its one P-DATA."""

    def __init__(self, primitive: Any, command: bytes, context_id: int) -> None:
        self.message_name = COMMAND_FIELDS[type(primitive)][1]
        self.context_id = context_id
        self.command_set = SimpleNamespace(
            AffectedSOPClassUID=primitive.AffectedSOPClassUID,
            CommandField=COMMAND_FIELDS[type(primitive)][0],
            MessageIDBeingRespondedTo=primitive.MessageIDBeingRespondedTo,
            CommandDataSetType=NO_DATA_SET,
            Status=primitive.Status,
            **{keyword: getattr(primitive, keyword) for _, keyword in COUNTS},
        )
        self.data_set = None
        self._command = command

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        """One P-DATA with the whole command set (PS3.8 E.2)."""
        return whole_command(context_id, self._command)
