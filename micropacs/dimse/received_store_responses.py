"""C-STORE responses received from a peer, read from their bytes.

Every instance micropacs sends waits for the peer's C-STORE-RSP, and pynetdicom 3.0.4
decodes each one (in the DUL thread, holding the GIL) into a pydicom Dataset, then sets
the primitive from it through validating setters: on a C-GET of CT images, about a third
of the DUL thread's Python time. :func:`store_response_of` reads the usual response, a
command set of group 0000 with the Affected SOP Class and Instance UIDs, the Message ID
Being Responded To and the Status (PS3.7 9.3.1.2), straight into pynetdicom's C_STORE
primitive, as ``message_to_primitive`` would set it. A response with anything else (an
Error Comment, an Offending Element, an unusual encoding or value) is decoded by
pynetdicom, which answers whatever is wrong with it as before.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE

from micropacs.dimse.command_sets import LAST_COMMAND_FRAGMENT, NO_DATA_SET

C_STORE_RSP: Final = 0x8001
KNOWN: Final = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000})
"""The elements of a plain C-STORE-RSP (its group length included)."""
_UID: Final = re.compile(rb"[0-9]+(\.[0-9]+)*")


def store_response_of(value: bytes, context_id: int) -> C_STORE | None:
    """The C_STORE response primitive of one presentation data value (its message
    control header, then the whole command set), or None when pynetdicom should read it."""
    if len(value) < 9 or value[:1] != LAST_COMMAND_FRAGMENT:
        return None
    fields: dict[int, bytes] = {}
    offset, end = 1, len(value)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", value, offset)
        start = offset + 8
        if group != 0x0000 or element not in KNOWN or element in fields or start + length > end:
            return None
        fields[element] = value[start : start + length]
        offset = start + length
    field = _us(fields.get(0x0100))
    answered = _us(fields.get(0x0120))
    status = _us(fields.get(0x0900))
    if field != C_STORE_RSP or _us(fields.get(0x0800)) != NO_DATA_SET:
        return None
    if answered is None or status is None:
        return None
    try:
        sop_class = _uid(fields.get(0x0002))
        instance = _uid(fields.get(0x1000))
    except ValueError:
        return None
    primitive = C_STORE()
    primitive._message_id_being_responded_to = answered
    primitive._status = status
    primitive._affected_sop_class_uid = sop_class
    primitive._affected_sop_instance_uid = instance
    primitive._context_id = context_id
    primitive._dataset_path = None
    primitive._dataset_file = None
    return primitive


def _us(raw: bytes | None) -> int | None:
    if raw is None or len(raw) != 2:
        return None
    number: int = struct.unpack("<H", raw)[0]
    return number


def _uid(raw: bytes | None) -> UID | None:
    """The UID of an element (None when absent or empty); ValueError when it is no UID."""
    if raw is None:
        return None
    text = raw.rstrip(b"\0 ")
    if not text:
        return None
    if len(text) > 64 or _UID.fullmatch(text) is None:
        raise ValueError("not a UID")
    return UID(text.decode("ascii"))
