"""C-STORE responses read from their bytes are the primitives pynetdicom decodes from
them, and what is unusual (error fields, another message, a broken encoding) is left to
pynetdicom."""

from __future__ import annotations

import struct
import warnings

from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dimse.received_store_responses import store_response_of
from micropacs.dimse.store_messages import StoreResponse, store_response_command

uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(
    lambda parts: ".".join(map(str, parts))[:64].rstrip(".")
)
statuses = st.sampled_from([0x0000, 0xB000, 0xB007, 0xA700, 0xA900, 0xC000, 0x0122])


def pynetdicom_primitive(value: bytes, context_id: int) -> C_STORE:
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[context_id, value]]  # type: ignore[list-item]
    message = DIMSEMessage()
    assert message.decode_msg(pdata)
    primitive = message.message_to_primitive()
    assert isinstance(primitive, C_STORE)
    return primitive


def response_bytes(
    answered: int, status: int, sop_class: str | None, instance: str | None
) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = answered
    primitive.Status = status
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    command = store_response_command(primitive)
    assert command is not None
    return b"\x03" + command


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 65535), statuses, st.one_of(st.none(), uids), st.one_of(st.none(), uids))
def test_a_response_is_the_primitive_pynetdicom_decodes(
    answered: int, status: int, sop_class: str | None, instance: str | None
) -> None:
    value = response_bytes(answered, status, sop_class, instance)
    ours = store_response_of(value, 5)
    assert ours is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pynetdicom_primitive(value, 5)
    for keyword in (
        "MessageIDBeingRespondedTo",
        "Status",
        "AffectedSOPClassUID",
        "AffectedSOPInstanceUID",
        "OffendingElement",
        "ErrorComment",
        "MessageID",
        "DataSet",
    ):
        assert getattr(ours, keyword) == getattr(theirs, keyword), keyword
    assert ours.is_valid_response and ours._context_id == theirs._context_id == 5
    shown = StoreResponse(ours, value[1:], 5)  # what EVT_DIMSE_RECV handlers read
    assert (shown.message_name, shown.command_set.Status) == ("C_STORE_RSP", status)


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def test_what_is_unusual_is_left_to_pynetdicom() -> None:
    plain = response_bytes(7, 0xB000, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
    assert store_response_of(plain, 1) is not None
    body = plain[1:]
    commented = body + element(0x0902, b"no room")
    assert store_response_of(b"\x03" + commented, 1) is None  # Error Comment
    assert store_response_of(b"\x01" + body, 1) is None  # not the last fragment
    assert store_response_of(b"\x02" + body, 1) is None  # a data set, not a command
    assert store_response_of(b"\x03" + body[:-3], 1) is None  # cut short
    echo = body.replace(struct.pack("<H", 0x8001), struct.pack("<H", 0x8030), 1)
    assert store_response_of(b"\x03" + echo, 1) is None  # a C-ECHO-RSP
    bad_uid = response_bytes(7, 0, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4").replace(
        b"1.2.3.4", b"1.2.x.4"
    )
    assert store_response_of(bad_uid, 1) is None
    twice = body + element(0x0900, struct.pack("<H", 0))
    assert store_response_of(b"\x03" + twice, 1) is None
    assert store_response_of(b"", 1) is None
