"""Storage Commitment Push Model (PS3.4 J): the N-ACTION request and the N-EVENT-REPORT result.

An SCU asks the archive to commit to the safekeeping of some SOP instances
with an N-ACTION of Action Type 1 on the well-known instance
1.2.840.10008.1.20.1.1 (PS3.4 J.3.2): its Action Information holds a
Transaction UID and a Referenced SOP Sequence of (class, instance) pairs.
:func:`parse_request` reads that, refusing what PS3.4 J.3.2.1.2 and PS3.7
10.1.4.1.10 let an SCP refuse; :func:`event_information` writes the answer the
SCP later sends as an N-EVENT-REPORT (PS3.4 J.3.3): Event Type 1 when every
instance was committed, 2 when some failed, with a Failed SOP Sequence whose
items carry a Failure Reason (PS3.4 J.3.3.1.1, Table J.3-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from micropacs.dicom.uids import is_valid_uid

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class (PS3.4 J.3.1)."""
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP Instance every request and report names (PS3.4 J.3.5)."""
REQUEST_STORAGE_COMMITMENT = 1
"""Action Type ID of a request (PS3.4 J.3.2.1.1)."""


class EventType(IntEnum):
    """Event Type ID of the N-EVENT-REPORT (PS3.4 J.3.3.1)."""

    SUCCESSFUL = 1
    """Every referenced instance is committed."""
    FAILURES_EXIST = 2
    """Some (or all) referenced instances are not."""


class FailureReason(IntEnum):
    """Why an instance is not committed (PS3.4 J.3.3.1.1, the Failure Reason's values)."""

    PROCESSING_FAILURE = 0x0110
    """A general failure: here, the object is gone or no longer matches its checksum."""
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """The archive holds no such instance (never stored, not indexed, rejected, deleted)."""
    RESOURCE_LIMITATION = 0x0213
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    CLASS_INSTANCE_CONFLICT = 0x0119
    """The instance is held under another SOP class than the request names."""
    DUPLICATE_TRANSACTION_UID = 0x0131


class ActionStatus(IntEnum):
    """The N-ACTION statuses an SCP answers a request it refuses with (PS3.7 10.1.4.1.10)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_SOP_INSTANCE = 0x0112
    INVALID_ARGUMENT_VALUE = 0x0115
    NO_SUCH_ACTION = 0x0123
    NOT_AUTHORIZED = 0x0124
    RESOURCE_LIMITATION = 0x0213


@dataclass(frozen=True)
class Reference:
    """One instance of a request: its SOP Class and SOP Instance UID."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failure:
    """An instance that is not committed, and why."""

    reference: Reference
    reason: FailureReason


class RequestRefused(Exception):
    """An N-ACTION that cannot be accepted, with the status to answer."""

    def __init__(self, status: ActionStatus, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True)
class Request:
    """A request as :func:`parse_request` read it: no reference twice, in its order."""

    transaction_uid: str
    references: tuple[Reference, ...]


def parse_request(
    action_type: int | None, instance_uid: str, information: Dataset, max_references: int
) -> Request:
    """The request of an N-ACTION, or :class:`RequestRefused` with its status.

    Refused: another Action Type ID (0x0123), another SOP instance than the well-known one
    (0x0112), a missing or invalid Transaction UID, an empty Referenced SOP Sequence or an
    item without two valid UIDs (0x0115 Invalid Argument Value), more than
    ``max_references`` instances (0x0213 Resource Limitation).
    """
    if action_type != REQUEST_STORAGE_COMMITMENT:
        raise RequestRefused(ActionStatus.NO_SUCH_ACTION, "the only action is 1 (request)")
    if instance_uid != STORAGE_COMMITMENT_INSTANCE:
        raise RequestRefused(
            ActionStatus.NO_SUCH_SOP_INSTANCE, "requests name 1.2.840.10008.1.20.1.1"
        )
    transaction = _text(information.get("TransactionUID"))
    if not is_valid_uid(transaction):
        raise RequestRefused(ActionStatus.INVALID_ARGUMENT_VALUE, "no valid Transaction UID")
    items = information.get("ReferencedSOPSequence")
    if not isinstance(items, DicomSequence) or not items:
        raise RequestRefused(ActionStatus.INVALID_ARGUMENT_VALUE, "no Referenced SOP Sequence")
    if len(items) > max_references:
        raise RequestRefused(
            ActionStatus.RESOURCE_LIMITATION, f"more than {max_references} instances"
        )
    references: dict[Reference, None] = {}
    for item in items:
        reference = Reference(
            _text(item.get("ReferencedSOPClassUID")), _text(item.get("ReferencedSOPInstanceUID"))
        )
        if not (is_valid_uid(reference.sop_class_uid) and is_valid_uid(reference.sop_instance_uid)):
            raise RequestRefused(
                ActionStatus.INVALID_ARGUMENT_VALUE, "a referenced SOP without two valid UIDs"
            )
        references[reference] = None
    return Request(transaction, tuple(references))


def _text(value: object) -> str:
    """A single text value as ``Dataset.get(keyword)`` gives it; "" for anything else."""
    return value.strip() if isinstance(value, str) else ""


def event_type(failed: Sequence[Failure]) -> EventType:
    """Event Type 1 when nothing failed, else 2 (PS3.4 J.3.3.1)."""
    return EventType.FAILURES_EXIST if failed else EventType.SUCCESSFUL


def event_information(
    transaction_uid: str,
    committed: Sequence[Reference],
    failed: Sequence[Failure],
    retrieve_ae_title: str = "",
) -> Dataset:
    """The Event Information of the N-EVENT-REPORT (PS3.4 J.3.3.1, Table J.3-2): the
    Transaction UID, the committed instances (Referenced SOP Sequence, present when
    there are some) with where to retrieve them, and the failed ones with their reason
    (Failed SOP Sequence, present when there are some)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if retrieve_ae_title and committed:
        ds.RetrieveAETitle = retrieve_ae_title
    if committed:
        ds.ReferencedSOPSequence = [_item(reference) for reference in committed]
    if failed:
        items = []
        for failure in failed:
            item = _item(failure.reference)
            item.FailureReason = int(failure.reason)
            items.append(item)
        ds.FailedSOPSequence = items
    return ds


def _item(reference: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item
