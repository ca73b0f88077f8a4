"""Storage Commitment Push Model SCP, the N-EVENT-REPORT half (PS3.4 J.3.3).

:class:`CommitmentReporter` consumes ``commitment.requested`` in its own consumer
group (``MICROPACS_COMMITMENT__GROUP``). For each request it first waits at the
read barrier, so every store acknowledged before the N-ACTION is indexed, then
commits an instance only if

- the catalog locates it (it is indexed, neither rejected nor deleted), else
  0x0112 No Such Object Instance;
- with the SOP Class UID the request names, else 0x0119 Class-Instance Conflict;
- and the SHA-256 of the object the BlobStore holds now equals the one recorded
  when it was stored, else 0x0110 Processing Failure (also for an object that is
  gone, or one stored before checksums were recorded: nothing vouches for it).

It sends the result as an N-EVENT-REPORT (Event Type 1 or 2, PS3.4 J.3.3.1) on a
new association to the requestor's host and port in the node registry
(:mod:`micropacs.dimse.event_report`), and tries again, waiting
``retry_initial`` doubling up to ``retry_max`` seconds, while there is no answer
and the request is younger than ``max_age``; then it gives up (counted, logged).
A check the backends cannot answer now is retried the same way.

At least once: a request's offset is committed only once its report was
answered or given up, and in order per partition, so after a restart every
request not yet reported is checked and reported again (a requestor may get a
report twice; the Transaction UID tells it which request it answers). Up to
``concurrency`` requests run at once, so a requestor that is down delays the
reports of others only once that many wait for theirs. An event that cannot be
decoded goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydicom import Dataset

from micropacs.checksums import blob_sha256
from micropacs.config import CommitmentSettings
from micropacs.dicom.commitment import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    Failure,
    FailureReason,
    Reference,
    event_information,
    event_type,
)
from micropacs.dimse.event_report import ReportFailed
from micropacs.errors import InvalidInput, MicropacsError, NotFound
from micropacs.events import (
    COMMITMENT,
    DEAD_LETTER,
    INSTANCE_STORED,
    CommitmentRequested,
    DeadLetter,
)
from micropacs.ports import BlobStore, Catalog, Consumer, EventBus, InstanceLocation, Node, Record
from micropacs.read_barrier import ReadBarrier
from services.router.commitment_metrics import CommitmentMetrics

log = logging.getLogger(__name__)

READER = "commitment"
"""This reader's name at the read barrier (its metrics and log lines)."""
LOCATE_BATCH = 500
"""Instances located per catalog call."""
SUCCESS = 0x0000


class Reports(Protocol):
    """What sends an N-EVENT-REPORT (:class:`~micropacs.dimse.event_report.EventReports`)."""

    def send(
        self,
        node: Node,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type: int,
        information: Dataset,
    ) -> int:
        """The status the node answered; ReportFailed when none."""
        ...


@dataclass(frozen=True)
class Outcome:
    """What the check of one request found."""

    committed: list[Reference]
    failed: list[Failure]


@dataclass
class _Partition:
    """The records of one partition in flight, in offset order, and which are done.

    A record delivered again (after a rebalance) may come behind later ones: the records
    stay sorted, and no commit ever goes back below one made before."""

    records: list[Record] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    committed: int = -1

    def started(self, record: Record) -> None:
        """Track ``record`` until it is finished."""
        bisect.insort(self.records, record, key=lambda r: r.offset)

    def finished(self, record: Record) -> Record | None:
        """Mark ``record`` done; the last record of the run now done from the oldest in
        flight, when it is past what was committed (else None: nothing to commit)."""
        self.done.add(record.offset)
        last = None
        while self.records and self.records[0].offset in self.done:
            last = self.records.pop(0)
            self.done.discard(last.offset)
        if last is None or last.offset <= self.committed:
            return None
        self.committed = last.offset
        return last


class CommitmentReporter:
    """Checks each request and reports it (see the module's documentation)."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Catalog,
        blobs: BlobStore,
        reports: Reports,
        settings: CommitmentSettings,
        metrics: CommitmentMetrics,
        *,
        ae_title: str,
        barrier: ReadBarrier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._catalog = catalog
        self._blobs = blobs
        self._reports = reports
        self._settings = settings
        self._metrics = metrics
        self._ae_title = ae_title
        self._barrier = barrier
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Consume requests until ``stop``; what is in flight then is reported after a restart."""
        consumer = await self._bus.consumer(COMMITMENT, self._settings.group)
        slots = asyncio.Semaphore(self._settings.concurrency)
        partitions: dict[int, _Partition] = {}
        tasks: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                records = await consumer.poll(
                    self._settings.concurrency, self._settings.poll_interval
                )
                for record in records:
                    await _acquire_or_stop(slots, stopping)
                    if stop.is_set():
                        return
                    partitions.setdefault(record.partition, _Partition()).started(record)
                    task = asyncio.create_task(
                        self._one(record, consumer, partitions[record.partition], slots)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            stopping.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            await consumer.close()

    async def _one(
        self, record: Record, consumer: Consumer, partition: _Partition, slots: asyncio.Semaphore
    ) -> None:
        self._metrics.pending.inc()
        try:
            await self.handle(record)
            last = partition.finished(record)
            if last is not None:
                await consumer.commit([last])
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not committed: the request is handled again after a restart.
            log.exception("storage commitment request failed unexpectedly")
        finally:
            self._metrics.pending.dec()
            slots.release()

    async def handle(self, record: Record) -> None:
        """Check one request and report it (or give up, or dead-letter it)."""
        try:
            request = CommitmentRequested.from_bytes(record.value)
            deadline = (
                datetime.fromisoformat(request.requested_at).timestamp() + self._settings.max_age
            )
        except InvalidInput as exc:
            await self._dead_letter(record, str(exc))
            return
        outcome = await self._checked(request, deadline)
        for _ in outcome.committed:
            self._metrics.instances.labels(result="committed").inc()
        for failure in outcome.failed:
            self._metrics.instances.labels(result=f"0x{failure.reason:04X}").inc()
        await self._report(request, outcome, deadline)

    async def check(self, request: CommitmentRequested) -> Outcome:
        """Which instances of ``request`` are committed (see the module's documentation);
        raises the backends' retryable errors."""
        if self._barrier is not None:
            await self._barrier.wait(READER, {INSTANCE_STORED: None})
        references = [Reference(c, i) for c, i in request.references]
        located: dict[str, InstanceLocation] = {}
        for start in range(0, len(references), LOCATE_BATCH):
            batch = [r.sop_instance_uid for r in references[start : start + LOCATE_BATCH]]
            for location in await self._catalog.locate(sop_instance_uids=batch):
                located[location.sop_instance_uid] = location
        committed: list[Reference] = []
        failed: list[Failure] = []
        for reference in references:
            reason = await self._failure_of(reference, located.get(reference.sop_instance_uid))
            if reason is None:
                committed.append(reference)
            else:
                failed.append(Failure(reference, reason))
        return Outcome(committed, failed)

    async def _failure_of(
        self, reference: Reference, location: InstanceLocation | None
    ) -> FailureReason | None:
        if location is None:
            return FailureReason.NO_SUCH_OBJECT_INSTANCE
        if location.sop_class_uid != reference.sop_class_uid:
            return FailureReason.CLASS_INSTANCE_CONFLICT
        if not location.sha256:
            return FailureReason.PROCESSING_FAILURE  # stored before checksums were recorded
        try:
            held = await blob_sha256(self._blobs, location.object_key)
        except NotFound:
            return FailureReason.PROCESSING_FAILURE
        return None if held == location.sha256 else FailureReason.PROCESSING_FAILURE

    async def _checked(self, request: CommitmentRequested, deadline: float) -> Outcome:
        """The check, tried again while the backends fail and the request is not too old;
        past that, every instance fails with 0x0110 (the report still says so)."""
        delay = self._settings.retry_initial
        while True:
            try:
                return await self.check(request)
            except MicropacsError as exc:
                if not exc.retryable or self._clock() + delay > deadline:
                    log.warning("storage commitment check failed", extra={"reason": str(exc)})
                    failed = [
                        Failure(Reference(c, i), FailureReason.PROCESSING_FAILURE)
                        for c, i in request.references
                    ]
                    return Outcome([], failed)
                log.info("storage commitment check retried", extra={"reason": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.retry_max)

    async def _report(
        self, request: CommitmentRequested, outcome: Outcome, deadline: float
    ) -> None:
        information = event_information(
            request.transaction_uid, outcome.committed, outcome.failed, self._ae_title
        )
        kind = int(event_type(outcome.failed))
        delay = self._settings.retry_initial
        while True:
            node, why = await self._node(request.requestor)
            if node is not None:
                try:
                    status = await asyncio.to_thread(
                        self._reports.send,
                        node,
                        STORAGE_COMMITMENT_PUSH,
                        STORAGE_COMMITMENT_INSTANCE,
                        kind,
                        information,
                    )
                except ReportFailed as exc:
                    why = str(exc)
                else:
                    outcome_label = "delivered" if status == SUCCESS else "refused"
                    self._metrics.reports.labels(outcome=outcome_label).inc()
                    log.info(
                        "storage commitment reported",
                        extra={
                            "calling_ae": request.requestor,
                            "event_type": kind,
                            "committed": len(outcome.committed),
                            "failed": len(outcome.failed),
                            "status": f"0x{status:04X}",
                        },
                    )
                    return
            self._metrics.report_failures.inc()
            if self._clock() + delay > deadline:
                self._metrics.reports.labels(outcome="given_up").inc()
                log.error(
                    "storage commitment report given up",
                    extra={"calling_ae": request.requestor, "reason": why},
                )
                return
            log.info(
                "storage commitment report retried",
                extra={"calling_ae": request.requestor, "reason": why, "retry_in": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.retry_max)

    async def _node(self, ae_title: str) -> tuple[Node | None, str]:
        """The requestor's registered node (re-read each attempt: its address may be fixed)."""
        try:
            nodes = await self._catalog.nodes()
        except MicropacsError as exc:
            return None, str(exc)
        for node in nodes:
            if node.ae_title == ae_title:
                return node, ""
        return None, "the requestor is no longer a registered node"

    async def _dead_letter(self, record: Record, reason: str) -> None:
        letter = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            consumer_group=self._settings.group,
            reason=reason,
            payload_base64=base64.b64encode(record.value).decode(),
        )
        await self._bus.publish(DEAD_LETTER, record.key, letter.to_bytes())
        log.error("commitment event dead-lettered", extra={"reason": reason})


async def _acquire_or_stop(slots: asyncio.Semaphore, stopping: asyncio.Future[Any]) -> None:
    """Take a slot, or return without one once ``stopping`` is done."""
    acquiring = asyncio.ensure_future(slots.acquire())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
    elif stopping.done():
        slots.release()  # taken as we were stopped: nobody uses it
