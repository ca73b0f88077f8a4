"""Storage Commitment Push Model SCP, the N-ACTION half (PS3.4 J.3.2).

A node of the registry that may store asks us to commit to some instances;
:func:`handle_action` reads the request (:func:`~micropacs.dicom.commitment.parse_request`)
and :class:`CommitmentRequests` publishes it as ``commitment.requested``: once the
bus has acknowledged it, the N-ACTION is answered Success at once, and the check
and the N-EVENT-REPORT follow in the background
(:mod:`services.router.commitment_report`), from the bus, so a restart between
the answer and the report still reports. A caller that is not a registered node
(we would not know where to report) or may not store is refused 0x0124; a request
that cannot be read gets the failure status PS3.7 10.1.4.1.10 gives it, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from micropacs.bridge import LoopBridge
from micropacs.config import CommitmentSettings, Settings
from micropacs.dicom.commitment import (
    STORAGE_COMMITMENT_PUSH,
    ActionStatus,
    Reference,
    RequestRefused,
    parse_request,
)
from micropacs.dimse.access import Permission, refused, registered_node
from micropacs.dimse.event_report import EventReports
from micropacs.errors import MicropacsError
from micropacs.events import COMMITMENT, CommitmentRequested
from micropacs.ports import BlobStore, Catalog, EventBus
from micropacs.read_barrier import ReadBarrier
from micropacs.service import BackgroundTask, HandlerBinding
from services.router.commitment_metrics import CommitmentMetrics
from services.router.commitment_report import CommitmentReporter

log = logging.getLogger(__name__)

COMMENT_MAX = 64
"""Error Comment (0000,0902) is an LO: at most 64 characters (PS3.7 Table E.1-1)."""


class CommitmentRequests:
    """Accepts requests: each is durable on the bus before it is answered."""

    def __init__(
        self, bus: EventBus, settings: CommitmentSettings, metrics: CommitmentMetrics
    ) -> None:
        self._bus = bus
        self.settings = settings
        self._metrics = metrics

    async def request(
        self, transaction_uid: str, references: Sequence[Reference], requestor: str, called: str
    ) -> CommitmentRequested:
        """Publish a request; returns once the bus acknowledged it."""
        event = CommitmentRequested(
            transaction_uid=transaction_uid,
            requestor=requestor,
            called_ae=called,
            references=tuple((r.sop_class_uid, r.sop_instance_uid) for r in references),
            requested_at=datetime.now(UTC).isoformat(),
        )
        await self._bus.publish(COMMITMENT, event.key, event.to_bytes())
        return event

    def answered(self, status: int) -> None:
        """Count an N-ACTION answered with ``status``."""
        self._metrics.requests.labels(status=f"0x{status:04X}").inc()


def add_contexts(ae: AE) -> None:
    """Accept the Storage Commitment Push Model SOP Class (PS3.4 J.3.1)."""
    ae.add_supported_context(
        STORAGE_COMMITMENT_PUSH, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )


def _answer(
    requests: CommitmentRequests, status: ActionStatus, comment: str = ""
) -> tuple[Dataset, None]:
    requests.answered(status)
    answer = Dataset()
    answer.Status = int(status)
    if comment:
        answer.ErrorComment = comment[:COMMENT_MAX]
    return answer, None


def handle_action(
    event: evt.Event, requests: CommitmentRequests, bridge: LoopBridge
) -> tuple[Dataset, None]:
    """N-ACTION of Storage Commitment (PS3.4 J.3.2): Success once the request is on the
    bus; 0x0124 for a caller that is no registered node allowed to store."""
    calling = str(event.assoc.requestor.ae_title).strip()
    node = registered_node(event.assoc)
    if node is None or refused(event, Permission.STORE, "N-ACTION"):
        if node is None:
            log.warning(
                "storage commitment refused: not a registered node", extra={"calling_ae": calling}
            )
        return _answer(
            requests, ActionStatus.NOT_AUTHORIZED, "not a registered node that may store"
        )
    try:
        request = parse_request(
            event.action_type,
            str(getattr(event.request, "RequestedSOPInstanceUID", "") or ""),
            event.action_information,
            requests.settings.max_references,
        )
    except RequestRefused as refusal:
        log.warning(
            "storage commitment request refused",
            extra={
                "status": f"0x{refusal.status:04X}",
                "reason": refusal.comment,
                "calling_ae": calling,
            },
        )
        return _answer(requests, refusal.status, refusal.comment)
    except Exception:  # noqa: BLE001 - an Action Information pydicom cannot decode
        log.warning("storage commitment request unreadable", extra={"calling_ae": calling})
        return _answer(requests, ActionStatus.PROCESSING_FAILURE, "the request cannot be decoded")
    try:
        called = str(event.assoc.acceptor.ae_title).strip()
        bridge.run(
            requests.request(request.transaction_uid, request.references, node.ae_title, called)
        )
    except MicropacsError as exc:
        log.warning("storage commitment request not recorded", extra={"reason": str(exc)})
        status = (
            ActionStatus.RESOURCE_LIMITATION if exc.retryable else ActionStatus.PROCESSING_FAILURE
        )
        return _answer(requests, status, "the request cannot be recorded now")
    return _answer(requests, ActionStatus.SUCCESS)


class StorageCommitment:
    """The Storage Commitment SCP as a part of the router: its presentation context, its
    N-ACTION handler and the background reporter (:mod:`services.router.commitment_report`)."""

    def __init__(self, requests: CommitmentRequests, reporter: BackgroundTask) -> None:
        self.requests = requests
        self._reporter = reporter

    def add_contexts(self, ae: AE) -> None:
        """Accept the Storage Commitment Push Model SOP Class."""
        add_contexts(ae)

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """N-ACTION, calling into ``bridge``'s loop."""
        return [(evt.EVT_N_ACTION, handle_action, [self.requests, bridge])]

    def background(self) -> list[BackgroundTask]:
        """The reporter: checks and N-EVENT-REPORTs."""
        return [self._reporter]


def build_commitment(
    settings: Settings,
    bus: EventBus,
    catalog: Catalog,
    blobs: BlobStore,
    registry: CollectorRegistry,
    barrier: ReadBarrier | None = None,
) -> StorageCommitment:
    """Storage Commitment over the given adapters; its checks wait at ``barrier`` (the
    read barrier of the index) so that a store acknowledged before a request is seen."""
    own = settings.commitment
    metrics = CommitmentMetrics(registry)
    reporter = CommitmentReporter(
        bus,
        catalog,
        blobs,
        EventReports(settings.dicom, own.timeout),
        own,
        metrics,
        ae_title=settings.dicom.ae_title,
        barrier=barrier,
    )
    return StorageCommitment(CommitmentRequests(bus, own, metrics), reporter.run)
