"""Storage Commitment's request and result datasets (PS3.4 J.3.2, J.3.3), and the in-order
commits of the reporter's consumer."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage

from micropacs.dicom.commitment import (
    STORAGE_COMMITMENT_INSTANCE,
    ActionStatus,
    EventType,
    Failure,
    FailureReason,
    Reference,
    RequestRefused,
    event_information,
    event_type,
    parse_request,
)
from micropacs.events import CommitmentRequested
from micropacs.ports import Record
from services.router.commitment_report import _Partition

A, B = "1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.2"
TRANSACTION = "1.2.826.0.1.3680043.10.543.99"


def information(*references: tuple[str, str], transaction: str = TRANSACTION) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def test_a_request_keeps_its_order_and_names_each_instance_once() -> None:
    ds = information((CTImageStorage, B), (CTImageStorage, A), (CTImageStorage, B))

    request = parse_request(1, STORAGE_COMMITMENT_INSTANCE, ds, 10)

    assert request.transaction_uid == TRANSACTION
    assert request.references == (Reference(CTImageStorage, B), Reference(CTImageStorage, A))


@pytest.mark.parametrize(
    ("action", "instance", "ds", "status"),
    [
        (2, STORAGE_COMMITMENT_INSTANCE, information((CTImageStorage, A)), 0x0123),
        (None, STORAGE_COMMITMENT_INSTANCE, information((CTImageStorage, A)), 0x0123),
        (1, A, information((CTImageStorage, A)), 0x0112),
        (1, STORAGE_COMMITMENT_INSTANCE, information((CTImageStorage, A), transaction=""), 0x0115),
        (1, STORAGE_COMMITMENT_INSTANCE, information(), 0x0115),
        (1, STORAGE_COMMITMENT_INSTANCE, information((CTImageStorage, "")), 0x0115),
        (1, STORAGE_COMMITMENT_INSTANCE, information(("", A)), 0x0115),
        (1, STORAGE_COMMITMENT_INSTANCE, information(*[(CTImageStorage, A)] * 3), 0x0213),
    ],
)
def test_refused_requests(action: int | None, instance: str, ds: Dataset, status: int) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_request(action, instance, ds, 2)
    assert refused.value.status == ActionStatus(status)


def test_a_request_without_references_is_refused() -> None:
    ds = Dataset()
    ds.TransactionUID = TRANSACTION
    with pytest.raises(RequestRefused, match="Referenced SOP Sequence"):
        parse_request(1, STORAGE_COMMITMENT_INSTANCE, ds, 10)


def test_the_result_of_a_request_all_committed() -> None:
    ds = event_information(TRANSACTION, [Reference(CTImageStorage, A)], [], "MICROPACS")

    assert event_type([]) is EventType.SUCCESSFUL
    assert ds.TransactionUID == TRANSACTION
    assert ds.RetrieveAETitle == "MICROPACS"
    assert [item.ReferencedSOPInstanceUID for item in ds.ReferencedSOPSequence] == [A]
    assert "FailedSOPSequence" not in ds


def test_the_result_of_a_request_with_failures() -> None:
    failed = [Failure(Reference(MRImageStorage, B), FailureReason.CLASS_INSTANCE_CONFLICT)]

    ds = event_information(TRANSACTION, [], failed, "MICROPACS")

    assert event_type(failed) is EventType.FAILURES_EXIST
    assert "ReferencedSOPSequence" not in ds and "RetrieveAETitle" not in ds
    (item,) = ds.FailedSOPSequence
    assert (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) == (MRImageStorage, B)
    assert item.FailureReason == 0x0119


def test_the_request_event_round_trips() -> None:
    event = CommitmentRequested(
        transaction_uid=TRANSACTION,
        requestor="CT1",
        called_ae="MICROPACS",
        references=((CTImageStorage, A), (CTImageStorage, B)),
        requested_at="2026-01-02T03:04:05+00:00",
    )

    assert CommitmentRequested.from_bytes(event.to_bytes()) == event
    assert event.key == TRANSACTION


def record(offset: int) -> Record:
    return Record("commitment", 0, offset, "k", b"")


def test_offsets_are_committed_in_order_and_never_go_back() -> None:
    partition = _Partition()
    for offset in (5, 6, 7):
        partition.started(record(offset))

    assert partition.finished(record(6)) is None  # 5 still in flight
    assert partition.finished(record(5)) == record(6)
    partition.started(record(4))  # delivered again after a rebalance
    assert partition.finished(record(4)) is None  # below what was committed
    assert partition.finished(record(7)) == record(7)
