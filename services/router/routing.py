"""The router's consumer: ``instance.stored`` events into the destinations' queues.

At-least-once (ARCHITECTURE.md, rule 2): the entries of a batch of events are written to
the queues (in the catalog) in one call, and only then are the events' offsets committed.
A crash in between delivers the batch again, and its entries, named by what they forward
(:func:`entry_id`), are not queued twice. While the catalog is down the write is retried
with bounded backoff; stopped meanwhile, the batch stays uncommitted. The events the
router has nothing to do with (deletions on the same topic, instances no rule forwards)
are committed with the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from micropacs.config import RouterSettings
from micropacs.errors import MicropacsError, is_retryable
from micropacs.events import INSTANCE_STORED, InstanceStored, decode_study_event
from micropacs.ports import Catalog, EventBus, ForwardEntry, Record
from micropacs.routing.rules import Forward, RuleSet
from services.router.metrics import RouterMetrics
from services.router.nodes import NodeCache

log = logging.getLogger(__name__)


def entry_id(destination: str, event: InstanceStored) -> str:
    """The name of the entry forwarding ``event``'s instance to ``destination``: the same
    for a redelivered event, another for the same instance stored again later."""
    text = f"{destination}\0{event.object_key}\0{event.received_at}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def entry_of(event: InstanceStored, forward: Forward, now: float) -> ForwardEntry:
    """The queue entry of one forward of ``event``."""
    return ForwardEntry(
        entry_id=entry_id(forward.destination, event),
        destination=forward.destination,
        sop_class_uid=event.sop_class_uid,
        sop_instance_uid=event.sop_instance_uid,
        series_instance_uid=event.series_instance_uid,
        study_instance_uid=event.study_instance_uid,
        object_key=event.object_key,
        transfer_syntax_uid=event.transfer_syntax_uid,
        size=event.size,
        target_syntax=forward.transfer_syntax,
        rule=forward.rule,
        enqueued_at=now,
        due_at=now,
    )


class Router:
    """Consumes ``instance.stored`` in the router's group and queues what the rules say."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Catalog,
        rules: RuleSet,
        nodes: NodeCache,
        metrics: RouterMetrics,
        settings: RouterSettings,
        queued: Callable[[Iterable[str]], None],
    ) -> None:
        self._bus = bus
        self._catalog = catalog
        self._rules = rules
        self._nodes = nodes
        self._metrics = metrics
        self._settings = settings
        self._queued = queued

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing after the entries are durable."""
        consumer = await self._bus.consumer(INSTANCE_STORED, self._settings.group)
        log.info(
            "router consumer started",
            extra={"group": self._settings.group, "rules": len(self._rules.rules)},
        )
        try:
            while not stop.is_set():
                records = await consumer.poll(
                    self._settings.batch_size, self._settings.poll_interval
                )
                if not records:
                    continue
                entries = await self.entries(records)
                try:
                    await self._enqueue(entries, stop)
                except MicropacsError as exc:
                    if not (stop.is_set() and is_retryable(exc)):
                        raise
                    log.info("router stopped before its batch was queued; it is redelivered")
                    return
                await consumer.commit(records)
                self._queued({entry.destination for entry in entries})
        finally:
            await consumer.close()

    async def entries(self, records: Sequence[Record]) -> list[ForwardEntry]:
        """The queue entries of a batch of events, in order (none, unread, without rules)."""
        if not self._rules.rules:
            # Every event of an archive that forwards nothing: decoding each one's header
            # (the index and IAN read them too) was a twentieth of serve's CPU per store.
            self._metrics.events.labels(outcome="unmatched").inc(len(records))
            return []
        entries: list[ForwardEntry] = []
        now = time.time()
        for record in records:
            try:
                event = decode_study_event(record.value)
            except MicropacsError as exc:
                # The index dead-letters what nobody can read; the router only skips it.
                log.warning(
                    "event not routed: undecodable",
                    extra={"offset": record.offset, "reason": str(exc)},
                )
                self._metrics.events.labels(outcome="undecodable").inc()
                continue
            if not isinstance(event, InstanceStored):
                self._metrics.events.labels(outcome="other").inc()
                continue
            group = ""
            if self._rules.uses_ae_group and event.calling_ae:
                group = await self._group_of(event.calling_ae)
            forwards = self._rules.forwards(event, group)
            self._metrics.events.labels(outcome="queued" if forwards else "unmatched").inc()
            entries += [entry_of(event, forward, now) for forward in forwards]
        return entries

    async def _group_of(self, ae_title: str) -> str:
        try:
            return await self._nodes.group_of(ae_title)
        except MicropacsError as exc:
            if not is_retryable(exc):
                raise
            log.warning("AE group unknown: the registry cannot be read", extra={"reason": str(exc)})
            return ""

    async def _enqueue(self, entries: list[ForwardEntry], stop: asyncio.Event) -> None:
        delay = 0.1
        while True:
            try:
                await self._catalog.enqueue_forwards(entries)
            except MicropacsError as exc:
                if not is_retryable(exc) or stop.is_set():
                    raise
                log.warning("queueing failed, retrying", extra={"reason": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for entry in entries:
                self._metrics.queued.labels(destination=entry.destination).inc()
            return
