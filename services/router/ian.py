"""Instance Availability Notification SCU (PS3.4 R): tells the configured nodes (the RIS)
which instances of a study the archive holds, once they are stored and indexed.

Two consumers in the ``ian`` group fill the pending notices in the catalog
(:class:`~micropacs.ports.NoticeQueue`), one per study and destination, and commit after
the write, so a kill -9 loses no notice (a redelivered event only notes it again):

- ``instance.stored``: the study's notice becomes due a quiet period after its latest
  instance (``MICROPACS_IAN__QUIET_PERIOD``, as dcm4chee's and Conquest's timers do); a
  study completed long ago that receives more gets a new notice, with its whole content.
- ``mpps``: a step that became COMPLETED is read back from the worklist store once the
  index has applied it (its N-CREATE holds the study, its N-SETs the series); its study's
  notice is then sent as soon as the catalog holds every series it references with at
  least the instances it names, or at the quiet-period timer if they never all arrive.

A timer claims the notices due (a lease, so routers sharing the catalog never send one
twice at once) and sends each as soon as the index has applied the latest instance noted
for it (its offset on the bus is below the index group's committed one): the content
comes from the catalog (:mod:`.ian_content`), never from the events. Each destination is
sent to by a task of its own, so one that hangs until its timeout holds up nobody else; a
refusal or a failed association is logged and counted, and the notice is tried again after
an exponential backoff with jitter, until ``max_attempts`` (then it is given up, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from micropacs.config import IanSettings, Settings
from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicom.worklist import (
    COMPLETED,
    PERFORMED_SERIES_SEQUENCE,
    PERFORMED_STEP_STATUS,
    SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
)
from micropacs.errors import InvalidInput, MicropacsError, is_retryable
from micropacs.events import (
    INSTANCE_STORED,
    MPPS,
    InstanceStored,
    PerformedStepUpdated,
    decode_study_event,
    decode_workflow_event,
)
from micropacs.ports import Catalog, EventBus, Node, PendingNotice, Record, StepReferences, Worklist
from micropacs.service import BackgroundTask
from services.router.backoff import backoff
from services.router.ian_content import notification, study_content
from services.router.ian_scu import Notifier, Outcome

T = TypeVar("T")

log = logging.getLogger(__name__)

BATCH = 200
"""Events noted per commit, and notices claimed per look."""
REFERENCED_IMAGE_SEQUENCE = tag_of("ReferencedImageSequence")
REFERENCED_NON_IMAGE_SEQUENCE = tag_of("ReferencedNonImageCompositeSOPInstanceSequence")
REFERENCED_SOP_INSTANCE_UID = tag_of("ReferencedSOPInstanceUID")


class IanMetrics:
    """Notifications sent, failed attempts, notices given up, and those pending."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "micropacs_router_ian_sent_total",
            "Instance Availability Notifications the destination took (N-CREATE success,"
            " warning or duplicate).",
            ["destination"],
            registry=registry,
        )
        self.failed = Counter(
            "micropacs_router_ian_failed_total",
            "Failed attempts to notify the destination, by reason: refused (a failure"
            " status), unreachable (no association or no answer), unknown_node (not in the"
            " node registry).",
            ["destination", "reason"],
            registry=registry,
        )
        self.abandoned = Counter(
            "micropacs_router_ian_abandoned_total",
            "Notices given up on after max_attempts failed attempts.",
            ["destination"],
            registry=registry,
        )
        self.pending = Gauge(
            "micropacs_router_ian_pending_notices",
            "Notices waiting for their quiet period, their images or a retry.",
            ["destination"],
            registry=registry,
            multiprocess_mode="livemax",
        )


def notice_uid(notice: PendingNotice) -> str:
    """The IAN's SOP Instance UID: derived from the notice's token (PS3.5 B.2, "2.25."),
    so every attempt at one notice carries the same UID."""
    return f"2.25.{int(notice.token, 16)}"


def _items(data: DicomJson, tag: str) -> list[DicomJson]:
    values = data.get(tag, {}).get("Value") or []
    return [item for item in values if isinstance(item, dict)]


def performed_references(uid: str, dataset: DicomJson) -> list[tuple[str, StepReferences]]:
    """The studies a performed step names (ScheduledStepAttributesSequence, PS3.4 F.7.2-1)
    with what it says it produced (PerformedSeriesSequence): its references, per study."""
    studies = []
    for attributes in _items(dataset, SCHEDULED_STEP_ATTRIBUTES_SEQUENCE):
        study = first_text(attributes, tags.STUDY_INSTANCE_UID)
        if is_valid_uid(study) and study not in studies:
            studies.append(study)
    series: list[tuple[str, tuple[str, ...]]] = []
    for performed in _items(dataset, PERFORMED_SERIES_SEQUENCE):
        series_uid = first_text(performed, tags.SERIES_INSTANCE_UID)
        if not is_valid_uid(series_uid):
            continue
        sops = [
            first_text(item, REFERENCED_SOP_INSTANCE_UID)
            for tag in (REFERENCED_IMAGE_SEQUENCE, REFERENCED_NON_IMAGE_SEQUENCE)
            for item in _items(performed, tag)
        ]
        series.append((series_uid, tuple(sop for sop in sops if is_valid_uid(sop))))
    step = StepReferences(uid, tuple(series))
    return [(study, step) for study in studies]


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until ``stop`` or ``wake`` is set, or ``seconds`` have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


class Notifications:
    """The IAN consumers, the timer and the per-destination senders; see the module."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Catalog,
        worklist: Worklist | None,
        notifier: Notifier,
        metrics: IanMetrics,
        settings: IanSettings,
        *,
        index_group: str,
        retrieve_ae: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._catalog = catalog
        self._worklist = worklist
        self._notifier = notifier
        self._metrics = metrics
        self._settings = settings
        self._destinations = list(dict.fromkeys(settings.destinations))
        self._index_group = index_group
        self._retrieve_ae = retrieve_ae
        self._clock = clock
        self._wake = asyncio.Event()
        self._senders: dict[str, asyncio.Task[None]] = {}

    def background(self) -> list[BackgroundTask]:
        """The tasks to run for the life of the process: two consumers and the timer (the
        MPPS consumer only with a worklist store to read the steps from)."""
        tasks: list[BackgroundTask] = [self.run_instances]
        if self._worklist is not None:
            tasks.append(self.run_steps)
        tasks.append(self.run_timer)
        return tasks

    # -- the consumers ----------------------------------------------------------------

    async def run_instances(self, stop: asyncio.Event) -> None:
        """Note each study's instances until ``stop`` is set, committing after the write."""
        await self._consume(INSTANCE_STORED, self.note_instances, stop)

    async def run_steps(self, stop: asyncio.Event) -> None:
        """Note each completed performed step until ``stop`` is set."""
        await self._consume(MPPS, self.note_steps, stop)

    async def _consume(
        self,
        topic: str,
        process: Callable[[Sequence[Record], asyncio.Event], Awaitable[bool]],
        stop: asyncio.Event,
    ) -> None:
        consumer = await self._bus.consumer(topic, self._settings.group)
        log.info("IAN consumer started", extra={"topic": topic, "group": self._settings.group})
        try:
            while not stop.is_set():
                records = await consumer.poll(BATCH, self._settings.check_interval)
                if not records:
                    continue
                try:
                    done = await process(records, stop)
                except MicropacsError as exc:
                    if not (stop.is_set() and is_retryable(exc)):
                        raise
                    done = False
                if not done:
                    return  # stopped midway: uncommitted, delivered again to the next consumer
                await consumer.commit(records)
        finally:
            await consumer.close()

    async def note_instances(self, records: Sequence[Record], stop: asyncio.Event) -> bool:
        """Make each study's notices due a quiet period from now, waiting for the index to
        pass the study's latest event of ``records``; True once all are noted."""
        latest: dict[str, Record] = {}
        for record in records:
            try:
                event = decode_study_event(record.value)
            except InvalidInput:
                continue  # the index dead-letters it; nothing of it reaches the catalog
            if isinstance(event, InstanceStored):
                latest.pop(event.study_instance_uid, None)
                latest[event.study_instance_uid] = record
        due_at = self._clock() + self._settings.quiet_period
        for study, record in latest.items():
            note = partial(
                self._catalog.note_instances,
                study,
                self._destinations,
                due_at,
                record.partition,
                record.offset,
            )
            await self._retrying(note, stop)
        return True

    async def note_steps(self, records: Sequence[Record], stop: asyncio.Event) -> bool:
        """Add each performed step that became COMPLETED to its studies' notices, once the
        index has applied it to the worklist store (its whole dataset is read there); False
        when stopped while waiting for the index."""
        for record in records:
            try:
                event = decode_workflow_event(record.value)
            except InvalidInput:
                continue
            if not isinstance(event, PerformedStepUpdated):
                continue
            if first_text(event.changes, PERFORMED_STEP_STATUS) != COMPLETED:
                continue
            if not await self._applied(record, stop):
                return False
            assert self._worklist is not None
            step = await self._retrying(partial(self._worklist.step, event.sop_instance_uid), stop)
            if step is None:
                log.warning("completed performed step not in the worklist store")
                continue
            due_at = self._clock() + self._settings.quiet_period
            for study, references in performed_references(step.sop_instance_uid, step.dataset):
                note = partial(
                    self._catalog.note_performed_step,
                    study,
                    self._destinations,
                    due_at,
                    references,
                )
                await self._retrying(note, stop)
            self._wake.set()
        return True

    async def _applied(self, record: Record, stop: asyncio.Event) -> bool:
        """Wait until the index group has committed past ``record`` (False: stopped)."""
        delay = 0.01
        while not stop.is_set():
            if await self._index_passed(record.topic, record.partition, record.offset):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self._settings.check_interval)
        return False

    async def _index_passed(self, topic: str, partition: int, offset: int) -> bool:
        try:
            committed = await self._bus.committed_offsets(self._index_group, [topic])
        except MicropacsError as exc:
            log.warning("index progress unknown", extra={"reason": str(exc)})
            return False
        return committed.get((topic, partition), 0) > offset

    async def _retrying(self, call: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
        delay = 0.1
        while True:
            try:
                return await call()
            except MicropacsError as exc:
                if not is_retryable(exc) or stop.is_set():
                    raise
                log.warning("catalog write failed, retrying", extra={"reason": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    # -- the timer and the senders -------------------------------------------------------

    async def run_timer(self, stop: asyncio.Event) -> None:
        """Look for notices due every ``check_interval`` (or when woken) until ``stop``."""
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.tick()
                except MicropacsError as exc:
                    log.warning("pending notices unreadable", extra={"reason": str(exc)})
                await _wait(stop, self._wake, self._settings.check_interval)
        finally:
            senders = list(self._senders.values())
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    async def tick(self) -> list[asyncio.Task[None]]:
        """Claim the notices due (or waiting for steps) and start a sender for each
        destination not busy; returns the senders started. The notices of a busy one
        are released: its sender is still at work, they are claimed again later."""
        await self._read_stats()
        now = self._clock()
        claimed = await self._catalog.claim_notices(now, BATCH, self._settings.lease)
        if not claimed:
            return []
        by_destination: dict[str, list[PendingNotice]] = {}
        for notice in claimed:
            by_destination.setdefault(notice.destination, []).append(notice)
        busy = [d for d, task in self._senders.items() if not task.done()]
        await self._catalog.release_notices([n for d in busy for n in by_destination.pop(d, [])])
        if not by_destination:
            return []
        nodes = {node.ae_title: node for node in await self._catalog.nodes()}
        started = []
        for destination, notices in by_destination.items():
            task = asyncio.create_task(self._send_all(nodes.get(destination), destination, notices))
            self._senders[destination] = task
            started.append(task)
        return started

    async def tick_and_wait(self) -> None:
        """One :meth:`tick` and the senders it started, to their end (for tests and tools)."""
        await asyncio.gather(*await self.tick())

    async def _send_all(
        self, node: Node | None, destination: str, notices: Sequence[PendingNotice]
    ) -> None:
        try:
            for number, notice in enumerate(notices):
                outcome = await self._handle(node, notice)
                if outcome is not None and not outcome.delivered and outcome.status is None:
                    # The node is down or unknown: the rest would fail alike; retry later.
                    await self._fail_all(destination, notices[number + 1 :], outcome)
                    return
        except MicropacsError as exc:
            log.warning(
                "notice not settled", extra={"destination": destination, "reason": str(exc)}
            )
        except Exception:
            log.exception("IAN sender failed", extra={"destination": destination})

    async def _handle(self, node: Node | None, notice: PendingNotice) -> Outcome | None:
        """Send ``notice`` if it is ready; None when it was not (released, or nothing to
        notify), else how the send ended."""
        due = notice.due_at <= self._clock()
        if notice.bus_offset >= 0 and not await self._index_passed(
            INSTANCE_STORED, notice.bus_partition, notice.bus_offset
        ):
            await self._catalog.release_notices([notice])  # the index is behind: soon
            return None
        content = await study_content(self._catalog, notice.study_instance_uid)
        ready = due or (content.instances and all(content.holds(s) for s in notice.steps))
        if not ready:
            await self._catalog.release_notices([notice])
            return None
        if not content.instances:  # deleted, or every instance rejected: nothing to say
            await self._catalog.settle_notice(notice, None)
            return None
        if node is None:
            outcome = Outcome(False, None, "not in the node registry")
            await self._failed(notice, outcome, "unknown_node")
            return outcome
        attributes = notification(content, notice.steps, self._retrieve_ae)
        outcome = await asyncio.to_thread(self._notifier.send, node, attributes, notice_uid(notice))
        if outcome.delivered:
            await self._catalog.settle_notice(notice, None)
            self._metrics.sent.labels(destination=notice.destination).inc()
            log.info(
                "instance availability notified",
                extra={"destination": notice.destination, "instances": content.instances},
            )
        else:
            await self._failed(
                notice, outcome, "unreachable" if outcome.status is None else "refused"
            )
        return outcome

    async def _fail_all(
        self, destination: str, notices: Iterable[PendingNotice], outcome: Outcome
    ) -> None:
        for notice in notices:
            await self._failed(notice, outcome, "unreachable", count=False)

    async def _failed(
        self, notice: PendingNotice, outcome: Outcome, reason: str, *, count: bool = True
    ) -> None:
        destination = notice.destination
        attempts = notice.attempts + 1
        if count:
            self._metrics.failed.labels(destination=destination, reason=reason).inc()
        if attempts >= self._settings.max_attempts:
            if await self._catalog.settle_notice(notice, None):
                self._metrics.abandoned.labels(destination=destination).inc()
                log.error(
                    "instance availability notice given up",
                    extra={
                        "destination": destination,
                        "attempts": attempts,
                        "reason": outcome.reason,
                    },
                )
            return
        retry_at = self._clock() + self.backoff(attempts)
        await self._catalog.settle_notice(notice, retry_at)
        if count:
            log.warning(
                "instance availability notice failed; trying again later",
                extra={"destination": destination, "attempts": attempts, "reason": outcome.reason},
            )

    def backoff(self, attempts: int) -> float:
        """Seconds after the ``attempts``-th failure: doubling from ``backoff_initial`` up
        to ``backoff_max``, then between half and all of it (jitter)."""
        return backoff(self._settings.backoff_initial, self._settings.backoff_max, attempts)

    async def _read_stats(self) -> None:
        # Each look (one grouped count of a small table): the gauge is never stale.
        backlog = await self._catalog.notice_backlog()
        for destination in {*self._destinations, *backlog}:
            self._metrics.pending.labels(destination=destination).set(backlog.get(destination, 0))


def notifications_from_settings(
    settings: Settings,
    bus: EventBus,
    catalog: Catalog,
    worklist: Worklist | None,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.time,
) -> Notifications | None:
    """The notifications ``settings.ian`` describes; None when no destination is set."""
    own = settings.ian
    if not own.destinations:
        return None
    return Notifications(
        bus,
        catalog,
        worklist,
        Notifier(settings.dicom, own.timeout),
        IanMetrics(registry),
        own,
        index_group=settings.index.group,
        retrieve_ae=settings.dicom.ae_title,
        clock=clock,
    )
