"""C-STORE requests of a stored file as bytes (:mod:`micropacs.dimse.store_requests`):
byte for byte what pynetdicom sends, or pynetdicom's own code when it is not sure."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_charset_files, get_testdata_files
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.dsutils import split_dataset as pynetdicom_split_dataset
from pynetdicom.pdu import P_DATA_TF

from micropacs.dimse import store_requests, store_scu
from tests import dicomdata

uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(
    lambda parts: ".".join(map(str, parts))[:64].rstrip(".")
)
titles = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16
)
META_KEYWORDS = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


def request(
    message_id: int,
    priority: int,
    sop_class: str,
    instance: str,
    originator: str | None = None,
    originator_id: int | None = None,
) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.Priority = priority
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.MoveOriginatorApplicationEntityTitle = originator
    primitive.MoveOriginatorMessageID = originator_id
    return primitive


def pynetdicom_command(primitive: C_STORE) -> bytes:
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def pynetdicom_pdus(primitive: C_STORE, max_pdu: int) -> bytes:
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(pdata).encode() for pdata in message.encode_msg(7, max_pdu))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 65535),
    st.sampled_from([0, 1, 2]),
    uids,
    uids,
    st.one_of(st.none(), titles),
    st.one_of(st.none(), st.integers(1, 65535)),
)
def test_a_store_request_is_pynetdicoms(
    message_id: int,
    priority: int,
    sop_class: str,
    instance: str,
    originator: str | None,
    originator_id: int | None,
) -> None:
    primitive = request(message_id, priority, sop_class, instance, originator, originator_id)
    primitive._dataset_path = (Path("unused"), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store_requests.store_request_command(primitive) == pynetdicom_command(primitive)
        # The same request by its values alone, as the C-STORE SCU sends a stored file.
        title = store_scu.originator_title(originator) if originator is not None else None
        values = store_requests.StoreRequest(
            sop_class, instance, message_id, priority, title, originator_id
        )
        assert store_requests.store_request_command(values) == pynetdicom_command(primitive)


def test_a_request_without_its_uids_is_left_to_pynetdicom() -> None:
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.Priority = 2
    assert store_requests.store_request_command(primitive) is None


@pytest.mark.parametrize("max_pdu", [4096 + 6, 16384, 131072, 700])
@pytest.mark.parametrize("data_bytes", [0, 1, 16378, 16379, 3 * 16378, (1 << 20) + 12345])
def test_the_pdus_of_a_file_are_pynetdicoms(tmp_path: Path, max_pdu: int, data_bytes: int) -> None:
    path = tmp_path / "object.dcm"
    (source,) = dicomdata.make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    head = source.read_bytes()
    offset = pynetdicom_split_dataset(source)[1]
    # A meta of a real file, then data bytes of the length under test.
    path.write_bytes(
        head[:offset] + bytes(range(256)) * (data_bytes // 256) + b"\x5a" * (data_bytes % 256)
    )
    primitive = request(5, 2, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
    primitive._dataset_path = (path, offset)
    command = store_requests.store_request_command(primitive)
    assert command is not None
    runs = [b"".join(run) for run in store_requests.file_runs(command, path, offset, 7, max_pdu)]
    assert b"".join(runs) == pynetdicom_pdus(primitive, max_pdu)
    assert all(len(run) <= 1.05 * store_requests.RUN_BYTES + max_pdu for run in runs)


def test_without_a_maximum_length_the_data_set_goes_in_bounded_fragments(tmp_path: Path) -> None:
    path = tmp_path / "object.dcm"
    path.write_bytes(b"\0" * 3_000_000)
    runs = [b"".join(run) for run in store_requests.file_runs(b"\1" * 10, path, 0, 1, 0)]
    assert len(runs) == 3
    assert max(len(run) for run in runs) <= store_requests.RUN_BYTES + 64


def test_the_meta_is_read_as_pynetdicom_reads_it(tmp_path: Path) -> None:
    files = [
        *get_testdata_files(),
        *get_charset_files(),
        *map(str, dicomdata.make_ct_series(tmp_path, 3, rows=8, cols=8)),
    ]
    fast = 0
    for name in files:
        path = Path(name)
        try:
            expected, offset = pynetdicom_split_dataset(path)
        except Exception:  # not a file pynetdicom could send
            continue
        with path.open("rb") as fp:
            found = store_requests.meta_of(fp.read(store_requests.META_READ))
        meta, ours = store_requests.split_dataset(path)
        assert ours == offset, name
        for keyword in META_KEYWORDS:
            assert (keyword in meta) == (keyword in expected), name
            if keyword in expected:
                assert getattr(meta, keyword) == getattr(expected, keyword), name
        fast += found is not None
    assert fast > len(files) // 2  # most files take the bytes path


def test_a_meta_cut_short_or_without_preamble_is_pydicoms_to_read() -> None:
    (path,) = get_testdata_files("CT_small.dcm")
    head = Path(path).read_bytes()[:2000]
    assert store_requests.meta_of(head) is not None
    for cut in range(0, 400, 7):
        found = store_requests.meta_of(head[:cut])
        assert found is None or found[1] <= cut
    assert store_requests.meta_of(b"\0" * 128 + b"DICX" + head[132:]) is None


def test_the_sent_request_says_what_it_is() -> None:
    primitive = request(9, 2, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "MOVER", 3)
    message = store_requests.request_message(primitive, 5)
    assert message.message_name == "C_STORE_RQ"
    assert message.command_set.MessageID == 9
    assert message.command_set.MoveOriginatorApplicationEntityTitle == "MOVER"
