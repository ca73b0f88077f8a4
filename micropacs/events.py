"""Events that flow between services, as versioned JSON (one module for all).

Every payload carries a ``type`` and a ``version``; a consumer refuses a
version it does not know instead of guessing (it goes to the dead-letter topic).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar

from micropacs.dicom.json_model import DicomJson
from micropacs.errors import InvalidInput
from micropacs.ports import AuditRecord, InstanceRecord

INSTANCE_STORED = "instance.stored"
"""Topic of :class:`InstanceStored`, keyed by StudyInstanceUID."""

DEAD_LETTER = "dead-letter"
"""Topic where consumers park events they cannot process after retries."""


def _encoded(event: Any, kind: str, version: int) -> bytes:
    """A dataclass event as its versioned JSON payload."""
    # Not dataclasses.asdict: it deep-copies the header, the costliest part.
    body: dict[str, object] = {"type": kind, "version": version}
    body.update((f.name, getattr(event, f.name)) for f in fields(event))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _json_object(payload: bytes) -> dict[str, Any]:
    """The JSON object of a payload; InvalidInput for anything else."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"event is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("event is not a JSON object")
    return body


@dataclass(frozen=True, kw_only=True)
class InstanceStored(InstanceRecord):
    """An object is durable in the BlobStore (ARCHITECTURE.md, rule 1).

    The instance record the index writes, plus who sent the object and where
    it was received. ``header`` is the whole dataset as DICOM JSON without
    bulk data (PS3.18 F.2), so the index can store and match any attribute.
    """

    type: ClassVar[str] = INSTANCE_STORED
    version: ClassVar[int] = 1

    calling_ae: str
    called_ae: str
    site: str

    @property
    def key(self) -> str:
        """The partition key: a study's events stay in order on one partition."""
        return self.study_instance_uid

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        return _encoded(self, self.type, self.version)

    @classmethod
    def from_bytes(cls, payload: bytes) -> InstanceStored:
        """Decode a payload, refusing other types, versions or missing fields."""
        body = _json_object(payload)
        if body.pop("type", None) != cls.type or body.pop("version", None) != cls.version:
            raise InvalidInput(f"not a {cls.type} v{cls.version} event")
        try:
            return cls(**body)
        except TypeError as exc:
            raise InvalidInput(f"malformed {cls.type} event: {exc}") from exc


DELETIONS = INSTANCE_STORED
"""Topic of the deletion events: the study's own topic, so that its stores and deletions,
all keyed by StudyInstanceUID, stay in order on one partition."""


@dataclass(frozen=True, kw_only=True)
class _Deletion:
    """What was asked to be removed from the archive, by whom, why and when.

    ``deletion_id`` (a UUID) names the request, so a redelivered event is recognised;
    ``requested_at`` (ISO 8601, UTC) bounds what it removes: an instance received after
    it is a newer store of the same UIDs and stays. ``object_prefixes`` are where the
    target's objects lie in the BlobStore, so a redelivery finds objects whose records
    are already gone.
    """

    type: ClassVar[str]
    version: ClassVar[int] = 1

    deletion_id: str
    study_instance_uid: str
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    actor: str
    reason: str = ""
    requested_at: str
    object_prefixes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The partition key: the study's, like :class:`InstanceStored`'s."""
        return self.study_instance_uid

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        return _encoded(self, self.type, self.version)


@dataclass(frozen=True, kw_only=True)
class StudyDeleted(_Deletion):
    """A whole study is to be removed (``study.deleted``)."""

    type: ClassVar[str] = "study.deleted"


@dataclass(frozen=True, kw_only=True)
class SeriesDeleted(_Deletion):
    """One series of a study is to be removed (``series.deleted``)."""

    type: ClassVar[str] = "series.deleted"


@dataclass(frozen=True, kw_only=True)
class InstanceDeleted(_Deletion):
    """One instance is to be removed (``instance.deleted``)."""

    type: ClassVar[str] = "instance.deleted"


DeletionEvent = StudyDeleted | SeriesDeleted | InstanceDeleted
_DELETION_TYPES: dict[str, type[DeletionEvent]] = {
    kind.type: kind for kind in (StudyDeleted, SeriesDeleted, InstanceDeleted)
}


def decode_study_event(payload: bytes) -> InstanceStored | DeletionEvent:
    """Decode an event of the study topic: ``instance.stored`` or a deletion.

    Refuses (InvalidInput) a payload that is not JSON, an unknown type or version,
    and missing or unexpected fields.
    """
    body = _json_object(payload)
    kind = _DELETION_TYPES.get(str(body.get("type", "")))
    if kind is None:
        stored = InstanceStored
        if body.pop("type", None) != stored.type or body.pop("version", None) != stored.version:
            raise InvalidInput(f"not a {stored.type} v{stored.version} or deletion event")
        try:
            return InstanceStored(**body)
        except TypeError as exc:
            raise InvalidInput(f"malformed {InstanceStored.type} event: {exc}") from exc
    body.pop("type")
    if body.pop("version", None) != kind.version:
        raise InvalidInput(f"not a {kind.type} v{kind.version} event")
    try:
        prefixes = tuple(str(prefix) for prefix in body.pop("object_prefixes", ()))
        event = kind(**body, object_prefixes=prefixes)
        datetime.fromisoformat(event.requested_at)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed {kind.type} event: {exc}") from exc
    return event


@dataclass(frozen=True)
class DeadLetter:
    """An event a consumer gave up on, with where it came from and why."""

    type: ClassVar[str] = DEAD_LETTER
    version: ClassVar[int] = 1

    source_topic: str
    partition: int
    offset: int
    key: str
    consumer_group: str
    reason: str
    payload_base64: str

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        body = {"type": self.type, "version": self.version, **asdict(self)}
        return json.dumps(body, separators=(",", ":")).encode()


WORKLIST = "worklist"
"""Topic of the worklist items' events, keyed by ``item_id`` (one item's events in order)."""

MPPS = "mpps"
"""Topic of the performed procedure steps' events, keyed by SOP Instance UID."""

PATIENT = "patient"
"""Topic of patient demographics and merges (HL7 ADT), keyed by the patient's "issuer|id"."""


def patient_key(patient_id: str, issuer_of_patient_id: str) -> str:
    """One patient's partition key and identity: "issuer|id" (PS3.3 C.7.1.1, IssuerOfPatientID)."""
    return f"{issuer_of_patient_id}|{patient_id}"


@dataclass(frozen=True, kw_only=True)
class _Event:
    """A versioned JSON event of one of the worklist topics (encoded from its fields)."""

    type: ClassVar[str]
    version: ClassVar[int] = 1

    @property
    def key(self) -> str:
        """The partition key."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        return _encoded(self, self.type, self.version)


@dataclass(frozen=True, kw_only=True)
class WorklistItemPut(_Event):
    """An item was scheduled or changed (HL7 ORM NW/XO, OMI, the API): the whole item."""

    type: ClassVar[str] = "worklist.item.put"

    item_id: str
    dataset: DicomJson
    source: str
    """Where it came from: ``hl7`` or ``api``."""

    @property
    def key(self) -> str:
        return self.item_id


@dataclass(frozen=True, kw_only=True)
class WorklistItemStatus(_Event):
    """An item's ScheduledProcedureStepStatus changed (HL7 CA/DC, MPPS start and end)."""

    type: ClassVar[str] = "worklist.item.status"

    item_id: str
    status: str
    source: str

    @property
    def key(self) -> str:
        return self.item_id


@dataclass(frozen=True, kw_only=True)
class WorklistItemRemoved(_Event):
    """An item was removed (the API's DELETE)."""

    type: ClassVar[str] = "worklist.item.removed"

    item_id: str
    source: str

    @property
    def key(self) -> str:
        return self.item_id


@dataclass(frozen=True, kw_only=True)
class PerformedStepCreated(_Event):
    """An MPPS N-CREATE was accepted (PS3.4 F.7.2.1): the dataset as created."""

    type: ClassVar[str] = "mpps.created"

    sop_instance_uid: str
    dataset: DicomJson
    calling_ae: str
    received_at: str

    @property
    def key(self) -> str:
        return self.sop_instance_uid


@dataclass(frozen=True, kw_only=True)
class PerformedStepUpdated(_Event):
    """An MPPS N-SET was accepted (PS3.4 F.7.2.2): the attributes it set, applied in order."""

    type: ClassVar[str] = "mpps.updated"

    sop_instance_uid: str
    changes: DicomJson
    received_at: str

    @property
    def key(self) -> str:
        return self.sop_instance_uid


@dataclass(frozen=True, kw_only=True)
class PatientUpdated(_Event):
    """A patient was registered or their demographics changed (ADT^A01, A04, A08)."""

    type: ClassVar[str] = "patient.updated"

    patient_id: str
    issuer_of_patient_id: str
    attributes: DicomJson
    """The Patient module's attributes as DICOM JSON (PS3.3 C.7.1.1)."""

    @property
    def key(self) -> str:
        return patient_key(self.patient_id, self.issuer_of_patient_id)


@dataclass(frozen=True, kw_only=True)
class PatientMerged(_Event):
    """One patient was merged into another (ADT^A40): the prior identity finds nothing after."""

    type: ClassVar[str] = "patient.merged"

    patient_id: str
    issuer_of_patient_id: str
    prior_patient_id: str
    prior_issuer_of_patient_id: str

    @property
    def key(self) -> str:
        return patient_key(self.patient_id, self.issuer_of_patient_id)


WorkflowEvent = (
    WorklistItemPut
    | WorklistItemStatus
    | WorklistItemRemoved
    | PerformedStepCreated
    | PerformedStepUpdated
    | PatientUpdated
    | PatientMerged
)
_WORKFLOW_TYPES: dict[str, type[WorkflowEvent]] = {
    kind.type: kind
    for kind in (
        WorklistItemPut,
        WorklistItemStatus,
        WorklistItemRemoved,
        PerformedStepCreated,
        PerformedStepUpdated,
        PatientUpdated,
        PatientMerged,
    )
}


def decode_workflow_event(payload: bytes) -> WorkflowEvent:
    """Decode an event of the ``worklist``, ``mpps`` or ``patient`` topic.

    Refuses (InvalidInput) a payload that is not JSON, an unknown type or
    version, and missing or unexpected fields.
    """
    body = _json_object(payload)
    kind = _WORKFLOW_TYPES.get(str(body.pop("type", "")))
    if kind is None:
        raise InvalidInput("not a worklist, MPPS or patient event")
    if body.pop("version", None) != kind.version:
        raise InvalidInput(f"not a {kind.type} v{kind.version} event")
    try:
        return kind(**body)
    except TypeError as exc:
        raise InvalidInput(f"malformed {kind.type} event: {exc}") from exc


AUDIT = "audit"
"""Topic of :class:`AuditRecorded`, keyed by the record's ``event_id``."""

AUDIT_KINDS = frozenset(
    {
        "login",
        "login-failed",
        "logout",
        "api",
        "node-changed",
        "user-changed",
        "study-sent",
        "study-deleted",
        "association",
        "query",
        "retrieve",
        "store",
        "application-start",
        "application-stop",
    }
)
"""What an audit record may say happened (docs/security.md, "Audit trail")."""


class Outcome(IntEnum):
    """ATNA EventOutcomeIndicator (PS3.15 A.5.1, RFC 3881 5.1.4)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    """The action was not completed (a refused login, a partial transfer)."""
    SERIOUS_FAILURE = 8
    """The action was ended prematurely (an aborted association)."""
    MAJOR_FAILURE = 12


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, kw_only=True)
class AuditRecorded(AuditRecord):
    """Something the audit trail keeps happened (``audit.recorded``, one type for every
    kind): the :class:`~micropacs.ports.AuditRecord` itself, with an ``event_id`` and
    ``time`` given when they are left out."""

    type: ClassVar[str] = "audit.recorded"
    version: ClassVar[int] = 1

    event_id: str = field(default_factory=_new_event_id)
    time: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.kind not in AUDIT_KINDS:
            raise InvalidInput(f"unknown audit kind {self.kind!r}")
        if self.outcome not in {int(o) for o in Outcome}:
            raise InvalidInput(f"audit outcome {self.outcome!r} is not 0, 4, 8 or 12")

    @property
    def key(self) -> str:
        """The partition key (records are ordered by ``time``, not by partition)."""
        return self.event_id

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        return _encoded(self, self.type, self.version)

    @classmethod
    def from_bytes(cls, payload: bytes) -> AuditRecorded:
        """Decode a payload, refusing other types, versions, kinds, outcomes or fields."""
        body = _json_object(payload)
        if body.pop("type", None) != cls.type or body.pop("version", None) != cls.version:
            raise InvalidInput(f"not a {cls.type} v{cls.version} event")
        try:
            study_uids = tuple(str(uid) for uid in body.pop("study_uids", ()))
            patient_ids = tuple(str(pid) for pid in body.pop("patient_ids", ()))
            operations = {str(k): int(v) for k, v in dict(body.pop("operations", {})).items()}
            return cls(
                **body, study_uids=study_uids, patient_ids=patient_ids, operations=operations
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed {cls.type} event: {exc}") from exc


COMMITMENT = "commitment"
"""Topic of :class:`CommitmentRequested`, keyed by the request's Transaction UID."""


@dataclass(frozen=True, kw_only=True)
class CommitmentRequested(_Event):
    """A Storage Commitment N-ACTION was accepted (PS3.4 J.3.2): the request, kept on the
    bus until its N-EVENT-REPORT is delivered or given up, so a restart still reports.

    ``references`` are the (SOP Class UID, SOP Instance UID) pairs it names, in its order;
    ``requestor`` is the calling AE title, whose registered address gets the report;
    ``requested_at`` (ISO 8601, UTC) starts the report's maximum age.
    """

    type: ClassVar[str] = "commitment.requested"

    transaction_uid: str
    requestor: str
    called_ae: str
    references: tuple[tuple[str, str], ...] = field(repr=False)
    requested_at: str

    @property
    def key(self) -> str:
        return self.transaction_uid

    @classmethod
    def from_bytes(cls, payload: bytes) -> CommitmentRequested:
        """Decode a payload, refusing other types, versions, fields or a bad time."""
        body = _json_object(payload)
        if body.pop("type", None) != cls.type or body.pop("version", None) != cls.version:
            raise InvalidInput(f"not a {cls.type} v{cls.version} event")
        try:
            references = tuple((str(c), str(i)) for c, i in body.pop("references"))
            event = cls(**body, references=references)
            datetime.fromisoformat(event.requested_at)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed {cls.type} event: {exc}") from exc
        return event
