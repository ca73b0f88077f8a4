"""C-GET and C-MOVE responses encoded from their values are pynetdicom's bytes, and what
they leave to pynetdicom (an Identifier, an Error Comment) they leave."""

from __future__ import annotations

import warnings
from io import BytesIO

from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.pdu import P_DATA_TF

from micropacs.dimse.retrieve_responses import RetrieveResponse, retrieve_response_command

uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(
    lambda parts: ".".join(map(str, parts))[:64].rstrip(".")
)
counts = st.one_of(st.none(), st.integers(0, 65535))
statuses = st.sampled_from([0x0000, 0xFF00, 0xB000, 0xA702, 0xFE00, 0xC000])


def pynetdicom_bytes(primitive: C_GET | C_MOVE) -> bytes:
    message = C_GET_RSP() if isinstance(primitive, C_GET) else C_MOVE_RSP()
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(3, 16384))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([C_GET, C_MOVE]),
    st.integers(1, 65535),
    statuses,
    st.one_of(st.none(), uids),
    counts,
    counts,
    counts,
    counts,
)
def test_a_response_is_pynetdicoms(
    kind: type[C_GET] | type[C_MOVE],
    message_id: int,
    status: int,
    sop_class: str | None,
    remaining: int | None,
    completed: int | None,
    failed: int | None,
    warning: int | None,
) -> None:
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.Status = status
    primitive.AffectedSOPClassUID = sop_class
    primitive.NumberOfRemainingSuboperations = remaining
    primitive.NumberOfCompletedSuboperations = completed
    primitive.NumberOfFailedSuboperations = failed
    primitive.NumberOfWarningSuboperations = warning
    command = retrieve_response_command(primitive)
    assert command is not None
    response = RetrieveResponse(primitive, command, 3)
    ours = b"".join(P_DATA_TF(p).encode() for p in response.encode_msg(3, 16384))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours == pynetdicom_bytes(primitive)
    assert response.message_name == ("C_GET_RSP" if kind is C_GET else "C_MOVE_RSP")
    assert response.command_set.Status == status


def test_an_identifier_or_an_error_comment_is_left_to_pynetdicom() -> None:
    with_list = C_GET()
    with_list.MessageIDBeingRespondedTo = 1
    with_list.Status = 0xB000
    with_list.Identifier = BytesIO(b"\x08\x00\x58\x00\x00\x00\x00\x00")
    assert retrieve_response_command(with_list) is None
    commented = C_MOVE()
    commented.MessageIDBeingRespondedTo = 1
    commented.Status = 0xC000
    setattr(commented, "ErrorComment", "no")  # noqa: B010 - typed None in pynetdicom
    assert retrieve_response_command(commented) is None
    unanswered = C_GET()
    unanswered.Status = 0
    assert retrieve_response_command(unanswered) is None
