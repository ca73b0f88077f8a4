"""Inputs the fuzz targets found crashing micropacs, each kept as a test of its own.

- An A-ASSOCIATE-RJ whose Source is not one PS3.8 9.3.4 defines decoded, but
  pynetdicom could not make it a primitive, and failed in the state machine:
  the reactor thread of the association (ours, requesting a C-MOVE
  sub-association from that peer) died. It is now an invalid PDU (Evt19).
- A P-DATA whose command fragment is not a command set, and a C-STORE-RQ on a
  presentation context that was not accepted, failed while pynetdicom decoded
  the DIMSE message: the association's reactor thread died with no A-ABORT,
  and the C-STORE's temporary file stayed in the data directory. Now the peer
  gets an A-ABORT and the file is deleted.
- A C-STORE message with two command sets: pynetdicom started a second
  temporary file and forgot the first; a message whose data set arrived but
  could not be converted, and one whose peer closed in the middle of its data
  set, left their files too. All are deleted now.
- A first PDU that is not an acceptable A-ASSOCIATE-RQ (another PDU, or a
  request of another protocol version) was aborted or rejected, but its
  association thread held a slot until the ACSE timeout; and a PDU right
  behind the A-ASSOCIATE-RQ made our A-ASSOCIATE-AC meet a closing state
  machine and kill the thread. Both end at once and cleanly now.
- A command group length of an unknown VR made
  :func:`~micropacs.dicom.json_model.to_json` raise while iterating the
  dataset; it never raises now.
- A Part 10 file whose Transfer Syntax UID names no transfer syntax made
  :func:`~micropacs.dicom.part10.read_header` raise ``ValueError`` (a STOW-RS
  answered 500): it is :class:`~micropacs.errors.NotDicom` now.
- A QIDO-RS ``fuzzymatching`` that is neither ``true`` nor ``false`` was
  taken for false (schemathesis, sending what the OpenAPI description says
  is not a boolean): it answers 400 now.
"""

from __future__ import annotations

import socket
import struct
import tempfile
import threading
import time
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from micropacs.dicom.json_model import to_json
from micropacs.dicom.levels import Level
from micropacs.dicom.part10 import read_header
from micropacs.dicomweb import qido
from micropacs.dimse import pdu_limits
from micropacs.dimse.ae import configure_pynetdicom
from micropacs.errors import InvalidInput, NotDicom
from tests.fuzz import seeds
from tests.fuzz.test_dimse import acceptor
from tests.fuzz.test_part10 import part10
from tests.fuzz.test_pdu import connection, drain, read_answer
from tests.service.conftest import Running
from tests.service.peers import echo

A_ABORT = b"\x07"


def test_an_association_reject_with_an_unknown_source_is_an_invalid_pdu() -> None:
    configure_pynetdicom()
    association = Association(AE(ae_title="MICROPACS"), "requestor")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        dul = association.dul
        dul.socket = AssociationSocket(association, client_socket=ours)
        assert dul.event_queue.get_nowait() == "Evt5"  # the wrapped socket's own connection
        dul.state_machine.current_state = "Sta5"  # our A-ASSOCIATE-RQ sent, awaiting the answer
        # A-ASSOCIATE-RJ: result 0 (not 1 or 2), source 0 (not 1, 2 or 3), reason 4
        theirs.sendall(b"\x03\x00\x00\x00\x00\x04\x00\x00\x00\x04")
        pdu_limits.read_pdu(dul)
        assert dul.event_queue.get_nowait() == "Evt19"  # not Evt4, which failed in the FSM


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF PDU with one presentation data value (PS3.8 9.3.5)."""
    value = struct.pack(">LBB", 2 + len(fragment), context_id, control) + fragment
    return struct.pack(">BBL", 0x04, 0, len(value)) + value


def test_a_command_that_is_no_command_set_aborts_the_association(fuzz_pacs: Running) -> None:
    with connection(fuzz_pacs) as sock:
        sock.sendall(seeds.association_request(fuzz_pacs.ae_title))
        assert read_answer(sock)[:1] == b"\x02"
        sock.sendall(p_data(1, 0x03, b"\x00" * 120))  # a last command fragment of zeros
        assert read_answer(sock)[:1] == A_ABORT
    assert echo(fuzz_pacs) == 0x0000


def test_a_c_store_on_a_context_not_accepted_aborts_and_leaves_no_file(
    fuzz_pacs: Running,
) -> None:
    stored = seeds.find_identifier()
    stored.SOPClassUID, stored.SOPInstanceUID = seeds.CT_IMAGE, "1.2.826.0.1.3680043.9.3811.2"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, stored)
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID = seeds.CT_IMAGE
    request.AffectedSOPInstanceUID = stored.SOPInstanceUID
    request.DataSet = BytesIO(fp.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    [command, *_] = list(message.encode_msg(9, seeds.MAX_PDU))  # context 9 was never proposed
    [(_, value)] = command.presentation_data_value_list
    with connection(fuzz_pacs) as sock:
        sock.sendall(seeds.association_request(fuzz_pacs.ae_title))
        assert read_answer(sock)[:1] == b"\x02"
        sock.sendall(p_data(9, value[0], bytes(value[1:])))
        assert read_answer(sock)[:1] == A_ABORT
    assert fuzz_pacs.leftovers() == []
    assert echo(fuzz_pacs) == 0x0000


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(b"1.2.840.10008.5.1.4", id="a UID of no transfer syntax"),
        pytest.param(b"1.2.840\\10008.1.2.1", id="two values"),
    ],
)
def test_a_transfer_syntax_uid_that_names_none_is_not_dicom(tmp_path: Path, odd: bytes) -> None:
    valid = part10(seeds.EXPLICIT)
    path = tmp_path / "odd.dcm"
    # The same file with its Transfer Syntax UID (0002,0010) made a value of the same length
    # that names no transfer syntax.
    assert len(odd) == len(seeds.EXPLICIT)
    path.write_bytes(valid.replace(seeds.EXPLICIT.encode(), odd, 1))
    with pytest.raises(NotDicom, match="names no transfer syntax"):
        read_header(path)


def acceptor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, Association) and t.is_acceptor]


def other_protocol_version(request: bytes) -> bytes:
    """``request`` with its Protocol Version (PS3.8 9.3.2, bytes 7-8) made 0x0021."""
    return request[:6] + b"\x00\x21" + request[8:]


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        pytest.param(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", A_ABORT, id="A-RELEASE-RQ"),
        pytest.param(None, b"\x03", id="A-ASSOCIATE-RQ of protocol version 0x0021"),
    ],
)
def test_a_first_pdu_that_is_no_acceptable_request_frees_its_slot_at_once(
    fuzz_pacs: Running, first: bytes | None, answer: bytes
) -> None:
    pdu = first or other_protocol_version(seeds.association_request(fuzz_pacs.ae_title))
    with connection(fuzz_pacs) as sock:
        sock.sendall(pdu)
        assert read_answer(sock)[:1] == answer  # A-ABORT, or A-ASSOCIATE-RJ (AE-6)
    deadline = time.monotonic() + 5  # far below the 30 s ACSE timeout it used to wait out
    while acceptor_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert acceptor_threads() == []
    assert echo(fuzz_pacs) == 0x0000


def test_a_pdu_right_behind_the_association_request_aborts_cleanly(fuzz_pacs: Running) -> None:
    release_rq = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    for _ in range(10):  # the PDU is read before our answer leaves nearly every time
        with connection(fuzz_pacs) as sock:
            sock.sendall(seeds.association_request(fuzz_pacs.ae_title) + release_rq)
            answers = drain(sock)
        assert A_ABORT + b"\x00\x00\x00\x00\x04" in answers, answers[:16]  # an A-ABORT PDU
    deadline = time.monotonic() + 5
    while acceptor_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert acceptor_threads() == []
    assert echo(fuzz_pacs) == 0x0000


def test_an_identifier_with_an_unknown_vr_becomes_json() -> None:
    """A command group length of VR 'AA': iterating the dataset converted it, and raised."""
    ds = decode(BytesIO(b"\x00\x00\x00\x00AA\x00\x00"), False, True)
    assert to_json(ds) == {}


def test_a_second_command_set_in_one_message_leaves_no_file(tmp_path: Path) -> None:
    """A C-STORE command set, then another, then a data set fragment that fails: pynetdicom
    started a second file for the second command and forgot the first."""
    command = (
        b"\x03\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x1a\x00\x00\x00"
        + b"\x00" * 25
        + b"\x01\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00"
        + b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x08\x02\x00\x00\x00\x00"
        + b"\x00\x00\x00\x00\x10\x00\x00\x00\x01\x01"
    )
    previous, tempfile.tempdir = tempfile.tempdir, str(tmp_path)
    try:
        association = acceptor()
        primitive = P_DATA()
        values = [[1, b"\x00"], [1, b"\x00"], [1, command], [0, b"\x03"]]
        primitive.presentation_data_value_list = cast(Any, values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the UIDs are not UIDs
            association.dimse.receive_primitive(primitive)
        assert association.dul.event_queue.get_nowait() == "Evt19"
        assert list(tmp_path.iterdir()) == []
    finally:
        tempfile.tempdir = previous


ECHO_COMMAND = (
    b"\x04\x00\x00\x00\x00J\x00\x00\x00F\x01\x03\x00\x00\x00\x00\x04\x00\x00\x008\x00\x00\x00"
    + b"\x00\x00\x02\x00\x12\x00\x00\x001.2.840.10008.1.1\x00\x00\x00\x00\x01\x02\x00\x00\x000\x00"
    + b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"
)
"""A P-DATA-TF with a whole C-ECHO-RQ command set on presentation context 1 (PS3.7 9.3.5)."""


def test_a_c_echo_in_place_of_a_c_store_data_set_leaves_no_file(fuzz_pacs: Running) -> None:
    """A C-STORE command set, then a C-ECHO's instead of the data set: the C-ECHO completed
    the message, its primitive carried the C-STORE's file, and nobody deleted it."""
    store_command = seeds.p_data_pdus()[-2]
    with connection(fuzz_pacs) as sock:
        sock.sendall(seeds.association_request(fuzz_pacs.ae_title))
        assert read_answer(sock)[:1] == b"\x02"
        sock.sendall(store_command + ECHO_COMMAND)
        assert read_answer(sock)[:1] == b"\x04"  # the C-ECHO-RSP
    deadline = time.monotonic() + 5
    while fuzz_pacs.leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuzz_pacs.leftovers() == []
    assert echo(fuzz_pacs) == 0x0000


def test_a_c_store_cut_off_by_its_peer_leaves_no_file(fuzz_pacs: Running) -> None:
    """A C-STORE data set still arriving when the peer closed stayed in the data directory."""
    pdus = seeds.p_data_pdus()
    store_command, store_data = pdus[-2], pdus[-1]
    # The data set's fragment, no longer marked last: more would follow.
    unfinished = store_data[:11] + bytes([store_data[11] & ~0x02]) + store_data[12:]
    with connection(fuzz_pacs) as sock:
        sock.sendall(seeds.association_request(fuzz_pacs.ae_title))
        assert read_answer(sock)[:1] == b"\x02"
        sock.sendall(store_command + unfinished)
        time.sleep(0.2)  # received and written to a temporary file
    deadline = time.monotonic() + 5
    while fuzz_pacs.leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuzz_pacs.leftovers() == []
    assert echo(fuzz_pacs) == 0x0000


def test_what_follows_a_whole_message_in_one_p_data_is_ignored(tmp_path: Path) -> None:
    """A C-STORE completed, then a data set fragment without a command in the same P-DATA:
    the abort it caused left the completed C-STORE's file to no one."""
    [command, data] = seeds.fragments()[2]
    previous, tempfile.tempdir = tempfile.tempdir, str(tmp_path)
    try:
        association = acceptor()
        primitive = P_DATA()
        values = [[7, command[1]], [7, data[1]], [7, b"\x02"]]
        primitive.presentation_data_value_list = cast(Any, values)
        association.dimse.receive_primitive(primitive)
        assert association.dul.event_queue.empty()  # no abort
        _, store = association.dimse.msg_queue.get_nowait()
        assert isinstance(store, C_STORE)  # for the handler, which deletes its one file
        assert len(list(tmp_path.iterdir())) == 1
    finally:
        tempfile.tempdir = previous


def test_a_fuzzymatching_that_is_not_a_boolean_is_refused() -> None:
    """PS3.18 8.3.4.1 allows ``true`` or ``false``; anything else was silently false."""
    for value in ("\x8c", "yes", "1", ""):
        with pytest.raises(InvalidInput, match="fuzzymatching"):
            qido.parse(Level.STUDY, [("fuzzymatching", value)])
    assert qido.parse(Level.STUDY, [("fuzzymatching", "False")]).warnings == []
    assert qido.parse(Level.STUDY, [("fuzzymatching", "TRUE")]).warnings == [qido.FUZZY_IGNORED]
