"""C-STORE's File Meta and responses as bytes (:mod:`micropacs.dimse.store_messages`):
byte for byte what pydicom and pynetdicom write, or their own code when it is not sure."""

from __future__ import annotations

import warnings
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.filewriter import write_file_meta_info as pydicom_write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta as pynetdicom_create_file_meta
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from micropacs.dimse import store_messages

uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(
    lambda parts: ".".join(map(str, parts))[:64].rstrip(".")
)
odd_ascii = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)


def pydicom_meta(sop_class: str, instance: str, syntax: str) -> bytes:
    out = BytesIO()
    meta = pynetdicom_create_file_meta(
        sop_class_uid=UID(sop_class), sop_instance_uid=UID(instance), transfer_syntax=UID(syntax)
    )
    pydicom_write_file_meta_info(out, meta)  # type: ignore[arg-type]
    return out.getvalue()


def our_meta(sop_class: str, instance: str, syntax: str) -> bytes:
    out = BytesIO()
    meta = store_messages.create_file_meta(
        sop_class_uid=UID(sop_class), sop_instance_uid=UID(instance), transfer_syntax=UID(syntax)
    )
    assert isinstance(meta, store_messages.FileMeta)
    store_messages.write_file_meta_info(out, meta)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    uids,
    st.one_of(uids, odd_ascii),
    st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90"]),
)
def test_file_meta_is_pydicoms(sop_class: str, instance: str, syntax: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd UIDs: pydicom warns, and writes them as they are
        assert our_meta(sop_class, instance, syntax) == pydicom_meta(sop_class, instance, syntax)


def test_a_non_ascii_or_empty_uid_is_left_to_pydicom() -> None:
    syntax = "1.2.840.10008.1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of such UIDs
        for odd in ("1.2.é", ""):
            meta = store_messages.create_file_meta(
                sop_class_uid=UID("1.2.3"), sop_instance_uid=UID(odd), transfer_syntax=UID(syntax)
            )
            assert store_messages.file_meta_bytes(meta) is None
        assert our_meta("1.2.3", "1.2.é", syntax) == pydicom_meta("1.2.3", "1.2.é", syntax)
        with pytest.raises(AttributeError):  # pydicom's own refusal, as before
            our_meta("1.2.3", "", syntax)


def pynetdicom_response(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def response(message_id: int, status: int, sop_class: str | None, instance: str | None) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.Status = status
    if sop_class is not None:
        primitive.AffectedSOPClassUID = sop_class
    if instance is not None:
        primitive.AffectedSOPInstanceUID = instance
    return primitive


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.sampled_from([0x0000, 0xA700, 0xA900, 0xB000, 0xC000, 0x0124]),
    st.one_of(st.none(), uids),
    st.one_of(st.none(), uids),
)
def test_a_store_response_is_pynetdicoms(
    message_id: int, status: int, sop_class: str | None, instance: str | None
) -> None:
    primitive = response(message_id, status, sop_class, instance)
    assert store_messages.store_response_command(primitive) == pynetdicom_response(primitive)


def test_responses_with_error_fields_are_left_to_pynetdicom() -> None:
    commented = response(1, 0xC000, "1.2.3", "1.2.3.4")
    commented.ErrorComment = "not DICOM"  # type: ignore[assignment]
    offending = response(1, 0xA900, "1.2.3", "1.2.3.4")
    offending.OffendingElement = [0x00080018]  # type: ignore[assignment]
    request = C_STORE()
    request.MessageID = 1
    for primitive in (commented, offending, request):
        assert store_messages.store_response_command(primitive) is None


def test_the_response_message_says_what_it_is() -> None:
    primitive = response(7, 0x0000, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
    command = store_messages.store_response_command(primitive)
    assert command is not None
    message = store_messages.StoreResponse(primitive, command, 3)
    assert message.message_name == "C_STORE_RSP"
    assert message.command_set.Status == 0x0000
    (pdata,) = message.encode_msg(3, 16384)
    assert pdata.presentation_data_value_list == [(3, b"\x03" + command)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 255), st.binary(min_size=1, max_size=300)), min_size=1))
def test_a_p_data_tf_is_pynetdicoms(pdvs: list[tuple[int, bytes]]) -> None:
    pdata = P_DATA()
    # pynetdicom checks for [ID, PDV] lists, though it annotates tuples
    pdata.presentation_data_value_list = [[c, v] for c, v in pdvs]  # type: ignore[misc]
    assert store_messages.p_data_tf(pdvs) == P_DATA_TF(pdata).encode()


def test_runs_keep_every_pdu_in_order() -> None:
    pdatas = []
    for number in range(10):
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[1, bytes([number]) * 100]]  # type: ignore[list-item]
        pdatas.append(pdata)
    runs = list(store_messages.runs(iter(pdatas), limit=250))
    assert [len(run.encoded) for run in runs] == [333, 333, 333, 111]
    assert b"".join(run.encoded for run in runs) == b"".join(
        P_DATA_TF(pdata).encode() for pdata in pdatas
    )
