"""DIMSE command sets encoded from their values (PS3.7 6.3, E.1): Implicit VR Little
Endian, group 0000, its group length first. The messages micropacs encodes itself
(:mod:`~micropacs.dimse.store_messages`, :mod:`~micropacs.dimse.store_requests`,
:mod:`~micropacs.dimse.retrieve_responses`) build their elements and share these."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final

from pynetdicom.pdu_primitives import P_DATA

NO_DATA_SET: Final = 0x0101
"""Command Data Set Type of a message without a data set."""
LAST_COMMAND_FRAGMENT: Final = b"\x03"
"""Message control header of a whole command set in one PDV (PS3.8 E.2)."""


def even_ascii(value: str, pad: bytes) -> bytes | None:
    """``value`` as ASCII padded to even length (PS3.5 7.1), or None if empty or not
    ASCII (left to pynetdicom then)."""
    if not value or not value.isascii():
        return None
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def command_set(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """The command set of ``elements`` (element number of group 0000, encoded value), in
    the order given, after its Command Group Length."""
    body = b"".join(struct.pack("<HHI", 0x0000, tag, len(v)) + v for tag, v in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def whole_command(context_id: int, command: bytes) -> Iterator[P_DATA]:
    """One P-DATA holding a command set without a data set as one PDV: far shorter than
    any Maximum Length a peer may set (PS3.8 D.1: at least 4,096 bytes less 6)."""
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, LAST_COMMAND_FRAGMENT + command))
    yield pdata
