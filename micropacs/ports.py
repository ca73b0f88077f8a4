"""The seams every service talks through (ARCHITECTURE.md, "ports").

Each port has an embedded adapter (files, SQLite) and a distributed one
(S3, Kafka, MongoDB); both pass the contract suites in ``tests/contract``.
Adapters raise only :mod:`micropacs.errors` errors: the ``*Unavailable``
family when the backend fails, so callers can retry or answer 0xA700.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import BinaryIO, Protocol

from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.levels import Level


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows of one object."""

    key: str
    size: int
    modified: datetime | None = field(default=None, compare=False)
    """When the object was last written (UTC; whole seconds on S3), None if unknown."""


class BlobStore(Protocol):
    """Objects (Part 10 files) keyed by validated UIDs."""

    async def put(self, key: str, source: BinaryIO, size: int) -> None:
        """Store ``size`` bytes read from ``source``; durable when this returns."""
        ...

    async def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path``, which the store may move: do not use it afterwards."""
        ...

    def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream an object's bytes; raises NotFound if absent."""
        ...

    def local_path(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A local file holding the object for the duration of the context."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """Size of an object, or None if it does not exist."""
        ...

    async def delete(self, key: str) -> None:
        """Remove an object; removing an absent object is not an error."""
        ...

    def iterate(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key that starts with ``prefix``, in no particular order."""
        ...

    async def check(self) -> None:
        """Raise BlobStoreUnavailable unless the store can be written now."""
        ...

    async def close(self) -> None:
        """Release connections and handles."""
        ...


@dataclass(frozen=True)
class Record:
    """One event read from the bus, with where it sits in its partition."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


Offsets = dict[tuple[str, int], int]
"""Positions in an event bus's partitions, by (topic, partition number)."""


class Consumer(Protocol):
    """A member of a consumer group on one topic (at-least-once delivery)."""

    async def poll(self, max_records: int, timeout: float) -> list[Record]:  # noqa: ASYNC109
        """Up to ``max_records`` records after the committed offset; [] on timeout."""
        ...

    async def commit(self, records: Sequence[Record]) -> None:
        """Mark ``records`` (and everything before them) as processed. Records of a
        partition that moved to another member of the group meanwhile are not marked (and
        no error is raised): they are delivered again, to that member."""
        ...

    async def lag(self) -> dict[int, int]:
        """Events not yet committed, by partition this member owns."""
        ...

    async def close(self) -> None:
        """Leave the group; uncommitted records are delivered again later."""
        ...


class EventBus(Protocol):
    """Durable, ordered-per-key topics with consumer groups."""

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append an event; returns only once the bus has acknowledged it durably."""
        ...

    async def consumer(self, topic: str, group: str) -> Consumer:
        """Join ``group`` on ``topic``, resuming after its committed offsets."""
        ...

    async def end_offsets(self, topics: Sequence[str]) -> Offsets:
        """Per partition of ``topics``, the offset after its last event: every event whose
        publish was acknowledged before the call lies below it."""
        ...

    async def committed_offsets(self, group: str, topics: Sequence[str]) -> Offsets:
        """Per partition of ``topics``, the offset ``group`` resumes from: it has processed
        every event below it that the bus still holds (the oldest held if it committed none)."""
        ...

    def partition_of(self, key: str, partitions: int) -> int:
        """The partition a ``key``'s events go to, on a topic of ``partitions`` partitions."""
        ...

    async def check(self) -> None:
        """Raise EventBusUnavailable unless the bus accepts publishes now."""
        ...

    async def close(self) -> None:
        """Flush and release connections."""
        ...


@dataclass(frozen=True, kw_only=True)
class InstanceRecord:
    """What the index writes for one stored instance.

    :class:`micropacs.events.InstanceStored` is one, so the index hands events
    to the catalog as they are.
    """

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    object_key: str
    size: int
    transfer_syntax_uid: str
    storage_group: str
    received_at: str
    header: DicomJson = field(repr=False)
    """The whole dataset as DICOM JSON without bulk data (PS3.18 F.2)."""
    original_transfer_syntax_uid: str = ""
    """The syntax the object arrived in, when it was compressed at rest ("" otherwise)."""
    sha256: str = ""
    """The SHA-256 of the object's bytes as put in the BlobStore (64 lowercase hex digits),
    taken at store time (:mod:`micropacs.checksums`); "" for objects stored before it was
    recorded. Storage Commitment (PS3.4 J) commits an instance only while it still matches."""


@dataclass(frozen=True)
class Query:
    """A C-FIND / QIDO-RS query at one level.

    ``identifier`` holds the keys as DICOM JSON: a key with a value is a
    matching key, a key without one is a return key (PS3.4 C.2.2.1).

    ``max_examined`` bounds the work of one query: the most records the
    catalog may read and throw away (candidates of its indexed pre-filter that
    do not match, and matches skipped for ``offset``); 0 is no bound.
    """

    level: Level
    identifier: DicomJson
    limit: int = 0
    offset: int = 0
    case_insensitive_pn: bool = False
    max_examined: int = 0


@dataclass(frozen=True)
class InstanceLocation:
    """Where one instance's bytes are, for C-GET, C-MOVE and WADO."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    object_key: str
    transfer_syntax_uid: str
    size: int
    patient: DicomJson = field(default_factory=dict, compare=False, repr=False)
    """The patient's attributes as the catalog answers them (Patient module, PS3.3
    C.7.1.1), when an update or merge from the RIS changed the patient; {} when the
    stored object's own are current. Retrieval writes them into the outgoing header."""
    sha256: str = field(default="", compare=False)
    """The object's SHA-256 recorded at store time (``InstanceRecord.sha256``), "" if none."""


@dataclass(frozen=True)
class Node:
    """A known DICOM node (Conquest's acrnema.map, dcm4chee's AE list).

    What it may do when it calls us: ``store`` (C-STORE), ``query`` (C-FIND),
    ``retrieve`` (C-GET, C-MOVE as requestor); ``move_destination``: it may be
    named as a C-MOVE destination (PS3.4 C.4.2.1.4.1). It may call from the
    addresses its ``host`` resolves to (unless ``from_host`` is False) and
    from the networks of ``allowed_from`` (CIDRs such as ``10.1.2.0/24``).
    A new node may do everything, from its host only.

    With ``user_id`` a caller with this title must present that user name in
    its User Identity negotiation (PS3.7 D.3.3.7). With ``tls_certificates``
    (SHA-256 fingerprints of DER certificates, lowercase hex: two during a
    renewal) it must call over TLS presenting one of those certificates
    (PS3.15 B.9); see :meth:`fingerprints`.
    """

    ae_title: str
    host: str
    port: int
    description: str = ""
    tls: bool = False
    issuer_of_patient_id: str = ""
    issuer_of_accession_number: str = ""
    user_id: str = ""
    storage_group: str = ""
    ae_group: str = ""
    store: bool = True
    query: bool = True
    retrieve: bool = True
    move_destination: bool = True
    allowed_from: tuple[str, ...] = ()
    from_host: bool = True
    tls_certificates: tuple[str, ...] = ()

    def networks(self) -> list[IPv4Network | IPv6Network]:
        """The networks of ``allowed_from``; ValueError names one that is not a CIDR."""
        try:
            return [ip_network(cidr.strip(), strict=False) for cidr in self.allowed_from]
        except ValueError as exc:
            raise ValueError(f"allowed_from of {self.ae_title}: {exc}") from None

    def fingerprints(self) -> tuple[str, ...]:
        """``tls_certificates`` as 64 lowercase hex digits each (colons and case as
        ``openssl x509 -fingerprint -sha256`` prints them are accepted); ValueError
        names one that is no SHA-256 fingerprint."""
        found = []
        for text in self.tls_certificates:
            digits = text.strip().replace(":", "").lower()
            if len(digits) != 64 or digits.strip("0123456789abcdef"):
                raise ValueError(
                    f"tls_certificates of {self.ae_title}: {text!r} is not a SHA-256 fingerprint"
                )
            found.append(digits)
        return tuple(found)


@dataclass(frozen=True)
class Credential:
    """Who may call the HTTP APIs: an API token or a local user (never the secret itself).

    ``kind`` is ``token`` (``name`` is the token's public id, ``secret_hash`` the
    SHA-256 of its secret) or ``user`` (``name`` is the user name, ``secret_hash``
    the password's argon2 hash). ``expires_at`` is ISO 8601 in UTC, "" for never.
    """

    kind: str
    name: str
    secret_hash: str = field(repr=False)
    role: str
    description: str = ""
    expires_at: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class CatalogCounts:
    """How much the catalog holds."""

    patients: int
    studies: int
    series: int
    instances: int


@dataclass(frozen=True)
class StorageUsage:
    """What one storage group's instances take: how many, and their stored bytes (each
    object's size as stored, compressed at rest or not)."""

    storage_group: str
    instances: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One entry of the audit trail: who did what, from where, to which studies, how it ended.

    :class:`micropacs.events.AuditRecorded` is one, so the index stores events as they
    are. ``outcome`` is the ATNA EventOutcomeIndicator (PS3.15 A.5.1: 0 success, 4 minor
    failure, 8 serious failure, 12 major failure); ``time`` is ISO 8601 in UTC.
    ``study_uids`` and ``patient_ids`` are patient data: kept here and sent to the audit
    record repository, never logged.
    """

    event_id: str
    time: str
    kind: str
    outcome: int
    actor: str
    role: str = ""
    source: str = ""
    destination: str = ""
    study_uids: tuple[str, ...] = field(default=(), repr=False)
    patient_ids: tuple[str, ...] = field(default=(), repr=False)
    operations: Mapping[str, int] = field(default_factory=dict)
    """Operations run and their counts (an association's ``C-STORE: 120``)."""
    detail: str = ""


@dataclass(frozen=True)
class AuditQuery:
    """A search of the audit trail: every given filter must hold, newest first.

    ``since`` is inclusive and ``until`` exclusive (ISO 8601; UTC when no zone is
    given); "" and None filter nothing; a ``limit`` of 0 is no bound.
    """

    since: str = ""
    until: str = ""
    kind: str = ""
    actor: str = ""
    study_uid: str = ""
    outcome: int | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """One instance an IOCM rejection note rejects (:mod:`micropacs.iocm`), recorded by its
    SOP Instance UID whether or not the catalog holds the instance yet.

    ``reason`` is the note's Document Title code value (DCM 113001, 113037, 113038 or
    113039); ``rejected_at`` is when the note was received (ISO 8601 in UTC, as
    :func:`micropacs.iocm.normal_time` writes it), so a note delivered twice records the
    same rejection.
    """

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    note_uid: str
    reason: str
    rejected_at: str


@dataclass(frozen=True, kw_only=True)
class RejectedInstance:
    """A rejected instance the catalog still holds, hidden, until it is deleted."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    object_key: str
    reason: str
    rejected_at: str


class ForwardState(StrEnum):
    """Where an entry of the router's queue stands."""

    WAITING = "waiting"
    """To be sent, now or once its next attempt is due."""
    DEAD = "dead"
    """Given up on (too many attempts, too old, or refused for good): an operator retries
    or cancels it."""


@dataclass(frozen=True, kw_only=True)
class ForwardEntry:
    """One instance to be sent to one destination: an entry of the router's durable queue.

    ``entry_id`` names it from what it forwards (the destination and the stored instance's
    object and receive time), so a redelivered ``instance.stored`` enqueues nothing new.
    Times are seconds since the epoch (UTC). ``transfer_syntax_uid`` is the stored
    object's; ``target_syntax`` the one the rule asks for ("" for as stored).
    """

    entry_id: str
    destination: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    object_key: str
    transfer_syntax_uid: str
    size: int = 0
    target_syntax: str = ""
    rule: str = ""
    enqueued_at: float
    state: ForwardState = ForwardState.WAITING
    attempts: int = 0
    due_at: float = 0.0
    """When it may be tried next (its enqueue time until it failed once)."""
    last_error: str = ""


@dataclass(frozen=True)
class ForwardFailure:
    """An attempt at an entry that failed: when to try again, or that it is dead now."""

    entry_id: str
    error: str
    due_at: float
    dead: bool = False


@dataclass(frozen=True)
class ForwardQueueStats:
    """One destination's queue at a glance (for metrics and the operators' list)."""

    destination: str
    waiting: int
    dead: int
    oldest_waiting: float | None
    """The enqueue time of its oldest waiting entry, None when none waits."""


class ForwardQueue(Protocol):
    """The router's durable queue, one per destination, in the catalog (docs/routing.md).

    The catalog holds it so the router keeps nothing of its own: any number of router
    processes share the queues, each entry sent by the one that claimed it; a claim is a
    lease, so the entries of a process killed mid-send are claimed again once it ends.
    Nothing here loads a whole queue: every call touches at most ``limit`` entries, or
    counts and changes them inside the database.
    """

    async def enqueue_forwards(self, entries: Sequence[ForwardEntry]) -> None:
        """Add entries; one already queued (same ``entry_id``) is left as it is."""
        ...

    async def claim_forwards(
        self, destination: str, now: float, limit: int, lease: float
    ) -> list[ForwardEntry]:
        """Up to ``limit`` waiting entries of ``destination`` due by ``now``, oldest enqueued
        first, leased for ``lease`` seconds: no other claim returns them until the lease
        ends or they are completed or failed."""
        ...

    async def complete_forwards(self, entry_ids: Sequence[str]) -> None:
        """Remove sent entries (absent ones are ignored)."""
        ...

    async def fail_forwards(self, failures: Sequence[ForwardFailure]) -> None:
        """Count a failed attempt for each entry, keep its error, end its lease, and make it
        due at ``due_at`` or dead."""
        ...

    async def expire_forwards(self, destination: str, enqueued_before: float, error: str) -> int:
        """Make dead the waiting entries of ``destination`` enqueued before
        ``enqueued_before`` (the maximum age), keeping ``error``; returns how many."""
        ...

    async def forward_queues(self) -> list[ForwardQueueStats]:
        """Each destination that has entries, by AE title."""
        ...

    async def forward_entries(
        self, destination: str, state: ForwardState | None, limit: int, offset: int = 0
    ) -> list[ForwardEntry]:
        """A page of ``destination``'s entries (of one state, where given), oldest enqueued
        first."""
        ...

    async def retry_forwards(self, destination: str, entry_ids: Sequence[str], now: float) -> int:
        """Make the given entries of ``destination`` (all its dead ones when none is given)
        waiting again, due ``now``, with no attempt counted and their age starting again
        at ``now``; returns how many changed."""
        ...

    async def cancel_forwards(
        self, destination: str, entry_ids: Sequence[str], state: ForwardState | None
    ) -> int:
        """Remove the given entries of ``destination`` (when none is given: all of it, or
        all of one ``state``); returns how many were removed."""
        ...


@dataclass(frozen=True)
class StepReferences:
    """What one completed Modality Performed Procedure Step says it produced in a study
    (PS3.4 F.7.2, PerformedSeriesSequence): its SOP Instance UID, and per series the SOP
    Instance UIDs its Referenced Image and Non-Image Composite Sequences name (none: the
    series alone)."""

    sop_instance_uid: str
    series: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, kw_only=True)
class PendingNotice:
    """An Instance Availability Notification owed to one destination for one study
    (PS3.4 R, docs/notifications.md): when it is due, and what it waits for.

    ``bus_partition`` and ``bus_offset`` are where the latest ``instance.stored`` of the
    study seen lies (-1: none), so the notice is sent only once the index has applied it.
    ``steps`` are the completed MPPSs of the study not notified yet: the notice goes as
    soon as the catalog holds what they reference, before ``due_at``. ``token`` changes
    each time the notice is noted again; a send settles only the notice it read.
    """

    study_instance_uid: str
    destination: str
    due_at: float
    attempts: int = 0
    bus_partition: int = -1
    bus_offset: int = -1
    steps: tuple[StepReferences, ...] = ()
    token: str = ""


class NoticeQueue(Protocol):
    """The pending Instance Availability Notifications, one per study and destination, in
    the catalog (docs/notifications.md), so a restart or a second router loses none and
    sends none twice at once. Times are seconds since the epoch."""

    async def note_instances(
        self,
        study_uid: str,
        destinations: Sequence[str],
        due_at: float,
        bus_partition: int,
        bus_offset: int,
    ) -> None:
        """Instances of the study arrived: each destination's notice becomes due at
        ``due_at`` (the quiet period ends), with no attempt counted, waiting for the index
        to pass ``bus_offset``; created where none is pending."""
        ...

    async def note_performed_step(
        self, study_uid: str, destinations: Sequence[str], due_at: float, step: StepReferences
    ) -> None:
        """A performed step of the study completed: add it to each destination's notice
        (replacing an earlier one of the same UID); a notice created here is due at
        ``due_at``, one pending keeps its due time."""
        ...

    async def claim_notices(self, now: float, limit: int, lease: float) -> list[PendingNotice]:
        """Up to ``limit`` notices due by ``now`` or waiting for performed steps, the
        earliest due first, leased for ``lease`` seconds: no other claim returns them until
        the lease ends or they are settled or released."""
        ...

    async def settle_notice(self, notice: PendingNotice, retry_at: float | None) -> bool:
        """End a claimed notice's lease. Unless it was noted again since (another
        ``token``): remove it (``retry_at`` None: sent or given up) or count a failed
        attempt and make it due at ``retry_at``. Returns whether it was removed."""
        ...

    async def release_notices(self, notices: Sequence[PendingNotice]) -> None:
        """End the leases of claimed notices, changing nothing else."""
        ...

    async def notice_backlog(self) -> dict[str, int]:
        """Pending notices per destination that has any."""
        ...


@dataclass(frozen=True)
class StudyInGroup:
    """The part of one study that lies in one storage group, for retention and tiering
    (docs/lifecycle.md): how many instances, their stored bytes, and when the newest of
    them was received (ISO 8601, as ``InstanceRecord.received_at``), which stands for the
    study's last use there."""

    study_instance_uid: str
    storage_group: str
    instances: int
    bytes: int
    last_received: str


@dataclass(frozen=True)
class StoredInstance:
    """Where one instance of a study is stored, and since when: what a move copies."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    storage_group: str
    object_key: str
    size: int
    received_at: str
    sha256: str = ""


@dataclass(frozen=True)
class InstanceMove:
    """One instance's new place: ``object_key`` in ``storage_group``, taken only while the
    catalog still records it at ``from_key`` received at ``received_at`` (a store of the
    same instance since then keeps its own place)."""

    sop_instance_uid: str
    from_key: str
    received_at: str
    object_key: str
    storage_group: str


class StorageTiers(Protocol):
    """What retention and tiering ask of the catalog (docs/lifecycle.md): the studies of a
    storage group, least recently received first, and switching a study's instances to
    copies of their objects in another group."""

    async def studies_in_group(
        self,
        storage_group: str,
        received_before: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[StudyInGroup]:
        """Up to ``limit`` studies with instances in ``storage_group``, ordered by their
        newest instance's receive time there, then by Study Instance UID; only those whose
        newest instance was received before ``received_before`` (ISO 8601), where given;
        only those after ``after`` (a (last_received, study UID) pair of the previous
        page), where given. Rejected instances (IOCM) are not counted. InvalidInput for a
        negative limit."""
        ...

    async def stored_instances(self, study_uid: str) -> list[StoredInstance]:
        """Every instance of the study the catalog shows (not rejected ones), by series and
        SOP Instance UID, with its storage group, key and receive time."""
        ...

    async def move_instances(self, study_uid: str, moves: Sequence[InstanceMove]) -> int:
        """Give instances of one study their new keys and storage group, all at once: a
        :meth:`Catalog.locate` sees either every old key or every new one, never a mix,
        and a crash leaves one or the other. An instance whose record changed since it
        was read (another key, or received again) keeps its record, and so does one of
        another study. Idempotent; returns how many instances this call moved.
        InvalidInput for a move without its keys or group."""
        ...


class Catalog(ForwardQueue, NoticeQueue, StorageTiers, Protocol):
    """Metadata of every stored instance, queryable at every level, plus the node registry,
    the credentials of the HTTP APIs and the router's queues and pending notifications."""

    async def upsert_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Write instances and their patient, study and series; idempotent.

        Writing the same record twice leaves the catalog as writing it once,
        and the computed attributes (PS3.4 C.3.4) stay right.
        """
        ...

    def query(self, query: Query) -> AsyncIterator[DicomJson]:
        """Every entity at ``query.level`` matching the identifier (PS3.4 C.2.2.2).

        Each result holds all attributes known at that level and above, plus
        the computed ones, as DICOM JSON; the caller picks the return keys.
        Raises :class:`~micropacs.errors.QueryTooBroad` once more than
        ``query.max_examined`` records were read and thrown away, whatever
        was yielded before.
        """
        ...

    async def locate(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
        patient_ids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The instances under the given entities (every non-empty filter must hold)."""
        ...

    async def counts(self) -> CatalogCounts:
        """Numbers of patients, studies, series and instances."""
        ...

    async def storage_usage(self) -> list[StorageUsage]:
        """Instances and bytes per storage group that has any, by group name: an aggregate
        of the catalog's own records (the sizes it was given), never a listing of the
        BlobStore's objects."""
        ...

    async def remove_instances(
        self,
        study_uid: str,
        series_uid: str = "",
        sop_instance_uid: str = "",
        received_until: str = "",
    ) -> list[str]:
        """Remove a study's instances (of one series, or one instance, where given) that
        were received no later than ``received_until`` (ISO 8601; "" for all), with the
        series, study and patient they leave empty; idempotent.

        The computed attributes and :meth:`counts` follow. Atomic per call as the
        adapter states (docs/operations.md, "Deleting studies"): after a crash the
        target is either wholly answered or not at all, and calling again finishes it.
        Returns the object keys of the records this call removed. Rejected instances under
        the target are removed too (their rejections stay recorded).
        """
        ...

    async def update_patient(
        self, patient_id: str, issuer_of_patient_id: str, attributes: DicomJson
    ) -> int:
        """Give a patient the RIS's demographics (HL7 ADT^A01/A04/A08); idempotent.

        ``attributes`` are Patient module attributes (PS3.3 C.7.1.1; others are
        ignored). They replace the patient's in every answer at every level and
        win over those of objects stored later. Recorded even for a patient the
        archive has no study of yet. Returns the number of studies changed (0
        for a patient merged into another: the survivor's are not touched).
        """
        ...

    async def merge_patient(
        self,
        prior_patient_id: str,
        prior_issuer_of_patient_id: str,
        patient_id: str,
        issuer_of_patient_id: str,
    ) -> int:
        """Merge the prior patient into the surviving one (HL7 ADT^A40); idempotent.

        The prior patient's studies move to the survivor (created with the prior
        one's attributes under the new identity if the archive has no study of it),
        the computed attributes follow, and the prior identity finds nothing
        afterwards: objects stored later under it are filed under the survivor.
        Returns the number of studies moved.
        """
        ...

    async def put_node(self, node: Node) -> None:
        """Add or replace a node of the registry."""
        ...

    async def remove_node(self, ae_title: str) -> bool:
        """Remove a node; False if it was not there."""
        ...

    async def nodes(self) -> list[Node]:
        """Every node of the registry, by AE title."""
        ...

    async def put_credential(self, credential: Credential) -> None:
        """Add or replace the credential of that kind and name."""
        ...

    async def credential(self, kind: str, name: str) -> Credential | None:
        """The credential of that kind and name, or None."""
        ...

    async def credentials(self, kind: str) -> list[Credential]:
        """Every credential of that kind, by name."""
        ...

    async def remove_credential(self, kind: str, name: str) -> bool:
        """Remove a credential; False if it was not there."""
        ...

    async def put_audit(self, records: Sequence[AuditRecord]) -> None:
        """Store audit records; idempotent by ``event_id`` (a replayed record is kept once)."""
        ...

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The audit records matching ``query``, newest first, its offset and limit applied;
        InvalidInput for a negative limit or offset."""
        ...

    async def reject_instances(self, rejections: Sequence[Rejection]) -> int:
        """Record rejections (IOCM, docs/iocm.md) and hide the instances they name.

        From then on no query, :meth:`locate` or :meth:`counts` sees a rejected instance,
        neither one held now nor one stored later under a rejected SOP Instance UID; the
        series, study and patient it leaves empty disappear and the computed attributes
        follow. Idempotent: an instance's first rejection is the one kept. Returns how many
        instances held until now this call hid.
        """
        ...

    async def locate_rejected(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The rejected instances still held under the given entities (every non-empty
        filter must hold; none given: none), which :meth:`locate` hides: what a deletion
        removes besides. Their ``patient`` is {}."""
        ...

    async def rejected_instances(self, rejected_until: str, limit: int) -> list[RejectedInstance]:
        """Up to ``limit`` rejected instances the catalog still holds, rejected no later than
        ``rejected_until`` (as :func:`micropacs.iocm.normal_time` writes it), oldest
        rejection first. A rejected instance leaves this list when :meth:`remove_instances`
        removes it; its rejection stays recorded."""
        ...

    async def check(self) -> None:
        """Raise CatalogUnavailable unless the catalog answers now."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class WorklistItem:
    """One worklist item: a Scheduled Procedure Step and what it belongs to (PS3.4 K.6.1).

    ``dataset`` is the whole item as DICOM JSON (PS3.18 F.2), with one item in
    its ScheduledProcedureStepSequence; :func:`micropacs.dicom.worklist.keys_of`
    gives its indexed keys. ``item_id`` is chosen by whoever schedules it (the
    order's filler number and step ID for HL7, generated for the API).
    """

    item_id: str
    dataset: DicomJson = field(repr=False)
    updated_at: str = ""


@dataclass(frozen=True)
class PerformedStep:
    """One Modality Performed Procedure Step SOP Instance (PS3.4 F.7), as DICOM JSON."""

    sop_instance_uid: str
    dataset: DicomJson = field(repr=False)
    calling_ae: str = ""
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True)
class PatientDemographics:
    """A patient as the RIS knows them (HL7 ADT): the Patient module as DICOM JSON.

    ``merged_into`` names the surviving patient ("issuer|id") once this one
    was merged (ADT^A40); a merged patient is never returned by a query.
    """

    patient_id: str
    issuer_of_patient_id: str
    dataset: DicomJson = field(repr=False)
    merged_into: str = ""
    updated_at: str = ""


class Worklist(Protocol):
    """Scheduled procedure steps, performed procedure steps and patient demographics."""

    async def put_item(self, item: WorklistItem) -> None:
        """Add or replace the item of that ``item_id``; idempotent."""
        ...

    async def item(self, item_id: str) -> WorklistItem | None:
        """The item of that id, or None."""
        ...

    async def remove_item(self, item_id: str) -> bool:
        """Remove an item; False if it was not there."""
        ...

    async def set_item_status(self, item_id: str, status: str) -> bool:
        """Set the ScheduledProcedureStepStatus of an item; False if it is not there."""
        ...

    def find_items(
        self,
        identifier: DicomJson,
        *,
        limit: int = 0,
        case_insensitive_pn: bool = False,
        unfinished_only: bool = False,
        max_examined: int = 0,
    ) -> AsyncGenerator[WorklistItem, None]:
        """Every item matching the identifier's matching keys (PS3.4 K.6.1.2, C.2.2.2).

        Keys inside ScheduledProcedureStepSequence match its item (sequence
        matching, C.2.2.2.6). Whatever the status, unless ``unfinished_only``
        leaves out the steps that are over (COMPLETED, DISCONTINUED, CANCELED:
        :data:`~micropacs.dicom.worklist.FINISHED_STATUSES`) before they are
        read, as a worklist query without a status key wants (K.6.1.2.2).
        Ordered by scheduled start date and time.

        Raises :class:`~micropacs.errors.QueryTooBroad` once more than
        ``max_examined`` candidates were read and did not match (0: no bound).
        A generator: close it (``contextlib.aclosing``) to release its cursor early.
        """
        ...

    async def put_step(self, step: PerformedStep) -> None:
        """Add or replace the performed step of that SOP Instance UID; idempotent."""
        ...

    async def step(self, sop_instance_uid: str) -> PerformedStep | None:
        """The performed step of that SOP Instance UID, or None."""
        ...

    def steps(
        self, status: str = "", updated_before: str = "", updated_after: str = ""
    ) -> AsyncIterator[PerformedStep]:
        """Performed steps, oldest change first: of one status, last changed before one
        time and not before another (ISO 8601, UTC), where given."""
        ...

    async def put_patient(self, patient: PatientDemographics) -> None:
        """Add or replace a patient's demographics; idempotent."""
        ...

    async def patient(
        self, patient_id: str, issuer_of_patient_id: str
    ) -> PatientDemographics | None:
        """That patient's demographics, or None."""
        ...

    async def check(self) -> None:
        """Raise CatalogUnavailable unless the store answers now."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
