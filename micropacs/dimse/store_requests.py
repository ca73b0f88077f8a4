"""C-STORE requests of a stored file sent as bytes, not through pydicom Datasets.

Every instance micropacs sends (a C-GET or C-MOVE sub-operation, a forwarded
copy, an admin's send job) is a file sent as stored, with
``Association.send_c_store(path)``. Profiled sending CT files to a DCMTK
storescp, pynetdicom 3.0.4 spent most of its time on that path building and
encoding Datasets: the file's meta read by pydicom to find where the data
set begins (``split_dataset``), the request's command set built as a Dataset
and encoded twice for its group length (PS3.7 9.3.1.1, E.1), and its
P-DATA fragments made one primitive at a time. :func:`install` (once per
process) gives the same bytes straight:

- ``split_dataset`` as pynetdicom's ``send_c_store`` looks it up: the File
  Meta Information (PS3.10 7.1) parsed from the file's first bytes, only the
  three UIDs the request needs, and the offset where the data set begins;
  anything unusual (no preamble, an element it cannot step over, a meta
  longer than it reads) goes to pynetdicom's own;
- :func:`store_request_command`: the request's command set encoded from its
  values, byte for byte pynetdicom's;
- :func:`file_runs`: the command and the file's data set as P-DATA-TF PDUs
  within the peer's Maximum Length (PS3.8 9.3.5, E.2), read from the file in
  runs of about a MiB, each sent in one state machine pass
  (:class:`~micropacs.dimse.store_messages.PDataRun`).

Tests compare every piece with pynetdicom's and pydicom's own bytes.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import pynetdicom.association
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset as pynetdicom_split_dataset

from micropacs.dimse.command_sets import command_set, even_ascii

C_STORE_RQ: Final = 0x0001
DATA_SET_PRESENT: Final = 0x0001
META_READ: Final = 4096
"""Bytes read to find the end of the File Meta Information; a longer meta goes to pydicom."""
RUN_BYTES: Final = 1 << 20
"""Bytes of P-DATA-TF PDUs a C-STORE request hands its reactor at a time."""
LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""VRs with a reserved field and a 4-byte length in Explicit VR (PS3.5 7.1.2)."""
_META_UIDS: Final = {
    0x0002: "MediaStorageSOPClassUID",
    0x0003: "MediaStorageSOPInstanceUID",
    0x0010: "TransferSyntaxUID",
}

_installed = threading.Lock()
_done = False


def meta_of(head: bytes) -> tuple[dict[str, str], int] | None:
    """From a Part 10 file's first bytes: the three UIDs of its File Meta Information
    and the offset of its data set, as pynetdicom's ``split_dataset`` finds them (the
    first element outside group 0002 ends the meta); None when pydicom should look."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    offset, uids = 132, dict[str, str]()
    while True:
        if offset + 8 > len(head):
            return None  # the meta runs past what was read
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return uids, offset
        vr = head[offset + 4 : offset + 6]
        if vr in LONG_VRS:
            if offset + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<I", head, offset + 8)
            start = offset + 12
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        else:
            return None  # implicit VR in the meta, or garbage: pydicom's answer
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        keyword = _META_UIDS.get(element)
        if keyword is not None:
            raw = head[start : start + length]
            if vr != b"UI" or not raw.isascii():
                return None
            uids[keyword] = raw.decode("ascii").rstrip("\0 ")
        offset = start + length


def split_dataset(path: Path) -> tuple[Any, int]:
    """pynetdicom's ``split_dataset`` for what ``send_c_store`` reads of it: the meta's
    UIDs (a Dataset) and the data set's offset."""
    with Path(path).open("rb") as fp:
        head = fp.read(META_READ)
    found = meta_of(head)
    if found is None:
        return pynetdicom_split_dataset(path)
    uids, offset = found
    return FileMetaUids({keyword: UID(value) for keyword, value in uids.items()}), offset


class FileMetaUids:
    """The UIDs of a file's meta, read as ``send_c_store`` reads its Dataset (``in``,
    attributes): a pydicom Dataset of three elements costs more than the rest of the
    request."""

    __slots__ = ("_uids",)

    def __init__(self, uids: dict[str, UID]) -> None:
        self._uids = uids

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._uids

    def __getattr__(self, keyword: str) -> UID:
        try:
            return self._uids[keyword]
        except KeyError:
            raise AttributeError(keyword) from None


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE-RQ's command fields by their pynetdicom primitive's names, for a request
    sent without a primitive (:mod:`micropacs.dimse.store_scu`)."""

    AffectedSOPClassUID: str
    AffectedSOPInstanceUID: str
    MessageID: int
    Priority: int = 2
    MoveOriginatorApplicationEntityTitle: str | None = None
    MoveOriginatorMessageID: int | None = None


def store_request_command(primitive: C_STORE | StoreRequest) -> bytes | None:
    """The command set of a C-STORE-RQ of a file, as pynetdicom encodes it (Implicit VR
    Little Endian, PS3.7 9.3.1.1, E.1), or None when pynetdicom should."""
    if (
        type(primitive) not in (C_STORE, StoreRequest)
        or primitive.MessageID is None
        or primitive.AffectedSOPClassUID is None
        or primitive.AffectedSOPInstanceUID is None
        or primitive.Priority is None
    ):
        return None
    sop_class = even_ascii(str(primitive.AffectedSOPClassUID), b"\0")
    instance = even_ascii(str(primitive.AffectedSOPInstanceUID), b"\0")
    if not sop_class or not instance:
        return None
    elements = [
        (0x0002, sop_class),
        (0x0100, struct.pack("<H", C_STORE_RQ)),
        (0x0110, struct.pack("<H", int(primitive.MessageID))),
        (0x0700, struct.pack("<H", int(primitive.Priority))),
        (0x0800, struct.pack("<H", DATA_SET_PRESENT)),
        (0x1000, instance),
    ]
    originator = primitive.MoveOriginatorApplicationEntityTitle
    if originator is not None:
        title = even_ascii(str(originator), b" ")
        if title is None:
            return None
        elements.append((0x1030, title))
    if primitive.MoveOriginatorMessageID is not None:
        elements.append((0x1031, struct.pack("<H", int(primitive.MoveOriginatorMessageID))))
    return command_set(elements)


def _pdv(context_id: int, control: int, fragment: bytes | memoryview) -> list[bytes | memoryview]:
    """A P-DATA-TF PDU of one PDV: its header, the PDV's item length, context ID and
    message control header (PS3.8 9.3.5, E.2), then the fragment itself."""
    size = len(fragment)
    return [struct.pack(">BBIIBB", 0x04, 0, size + 6, size + 2, context_id, control), fragment]


def file_runs(
    command: bytes, path: Path, offset: int, context_id: int, max_pdu: int
) -> Iterator[list[bytes | memoryview]]:
    """The P-DATA-TF PDUs of a C-STORE-RQ (``command``, then the data set of the file
    at ``path`` from ``offset``), each within the peer's Maximum Length ``max_pdu``
    and fragmented as pynetdicom does (0, no limit: fragments of :data:`RUN_BYTES`),
    in runs of about :data:`RUN_BYTES`: memory is one run, whatever the file. A run is
    the list of its pieces (PDU headers and views of the file's bytes), never joined,
    so that it goes to the socket in one gathering write without a copy."""
    size = max_pdu - 6 if max_pdu > 6 else RUN_BYTES
    pieces = [command[i : i + size] for i in range(0, len(command), size)]
    parts: list[Any] = []
    for number, piece in enumerate(pieces, start=1):
        parts += _pdv(context_id, 0x03 if number == len(pieces) else 0x01, piece)
    with Path(path).open("rb") as fp:
        left = fp.seek(0, 2) - offset
        fp.seek(offset)
        per_read = max(RUN_BYTES // size, 1) * size
        while True:
            block = memoryview(fp.read(min(per_read, left))) if left > 0 else memoryview(b"")
            if not block:
                # Nothing (more) to read: an empty data set, or a file cut short while
                # sent; the message still ends, with an empty last fragment.
                parts += _pdv(context_id, 0x02, b"")
                yield parts
                return
            left -= len(block)
            for start in range(0, len(block), size):
                last = left <= 0 and start + size >= len(block)
                parts += _pdv(context_id, 0x02 if last else 0x00, block[start : start + size])
            yield parts
            parts = []
            if left <= 0:
                return


def request_message(primitive: C_STORE | StoreRequest, context_id: int) -> SimpleNamespace:
    """What ``EVT_DIMSE_SENT`` handlers read of a C-STORE-RQ sent from bytes."""
    return SimpleNamespace(
        message_name="C_STORE_RQ",
        context_id=context_id,
        command_set=SimpleNamespace(
            AffectedSOPClassUID=primitive.AffectedSOPClassUID,
            CommandField=C_STORE_RQ,
            MessageID=primitive.MessageID,
            Priority=primitive.Priority,
            CommandDataSetType=DATA_SET_PRESENT,
            AffectedSOPInstanceUID=primitive.AffectedSOPInstanceUID,
            MoveOriginatorApplicationEntityTitle=primitive.MoveOriginatorApplicationEntityTitle,
            MoveOriginatorMessageID=primitive.MoveOriginatorMessageID,
        ),
        data_set=None,
    )


def install() -> None:
    """Read the File Meta of files ``send_c_store`` sends from bytes, once per process."""
    global _done
    with _installed:
        if _done:
            return
        association: Any = pynetdicom.association
        association.split_dataset = split_dataset
        _done = True
