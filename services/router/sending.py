"""Sending the queues: one sender per destination, each on its own thread and association.

A sender claims the head of its destination's queue (a lease: :class:`ForwardQueue`), sends
it with C-STORE on one association (:class:`~micropacs.dimse.scu.Associations`, in a thread
of its own, so a destination that hangs until its timeout holds up nobody else), and then
removes what the destination stored and counts a failed attempt for the rest: due again
after an exponential backoff with jitter, dead after ``max_attempts`` attempts or once older
than ``max_age``, at once when its object is gone from the store.

A batch of which nothing was stored makes the destination *failing*: it waits a backoff of
its own (doubling with each failed batch, with jitter), then tries one entry at a time until
one is stored, so a dead destination costs one attempt per backoff, not its whole queue. An
operator's retry ends that wait. Memory is one batch per destination, whatever the queues'
lengths: the entries stay in the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from micropacs.bridge import LoopBridge
from micropacs.config import RouterSettings
from micropacs.dimse.opened_ahead import OpenedAhead
from micropacs.dimse.scu import Associations
from micropacs.errors import MicropacsError, NotFound, Status
from micropacs.ports import (
    BlobStore,
    Catalog,
    ForwardEntry,
    ForwardFailure,
    ForwardQueueStats,
    InstanceLocation,
    Node,
)
from services.router.backoff import backoff
from services.router.metrics import RouterMetrics
from services.router.nodes import NodeCache

log = logging.getLogger(__name__)

STORED = frozenset({Status.SUCCESS, *Status.STORE_WARNINGS})
"""C-STORE statuses under which the destination stored the instance (PS3.4 B.2.3)."""
GONE = "the object is no longer stored (its study was deleted?)"


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until ``stop`` or ``wake`` is set, or ``seconds`` have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def location_of(entry: ForwardEntry) -> InstanceLocation:
    """What the C-STORE SCU sends for ``entry``."""
    return InstanceLocation(
        sop_instance_uid=entry.sop_instance_uid,
        sop_class_uid=entry.sop_class_uid,
        series_instance_uid=entry.series_instance_uid,
        study_instance_uid=entry.study_instance_uid,
        object_key=entry.object_key,
        transfer_syntax_uid=entry.transfer_syntax_uid,
        size=entry.size,
    )


class DestinationSender:
    """Sends one destination's queue until stopped."""

    def __init__(
        self,
        destination: str,
        catalog: Catalog,
        blobs: BlobStore,
        nodes: NodeCache,
        associations: Associations,
        metrics: RouterMetrics,
        settings: RouterSettings,
    ) -> None:
        self.destination = destination
        self._catalog = catalog
        self._blobs = blobs
        self._nodes = nodes
        self._associations = associations
        self._metrics = metrics
        self._settings = settings
        self._wake = asyncio.Event()
        self._failed_batches = 0
        self._resume_at = 0.0
        self._expired_at = -1e9
        self.failing_since = 0.0
        """When its current run of failed batches began (0 while it takes instances)."""

    def wake(self, *, retry: bool = False) -> None:
        """Look at the queue now; with ``retry`` (an operator's), end a failing wait too."""
        if retry:
            self._resume_at = 0.0
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and send batches until ``stop`` is set."""
        label = self.destination
        self._metrics.failing_since.labels(destination=label).set(0)
        with ThreadPoolExecutor(1, thread_name_prefix=f"router-{label}") as executor:
            while not stop.is_set():
                self._wake.clear()
                now = time.time()
                if now < self._resume_at:
                    await _wait(stop, self._wake, self._resume_at - now)
                    continue
                try:
                    await self._expire(now)
                    limit = 1 if self._failed_batches else self._settings.send_batch
                    entries = await self._catalog.claim_forwards(
                        label, now, limit, self._settings.lease
                    )
                except MicropacsError as exc:
                    log.warning(
                        "queue unreadable", extra={"destination": label, "reason": str(exc)}
                    )
                    await _wait(stop, self._wake, self._settings.idle_interval)
                    continue
                if not entries:
                    await _wait(stop, self._wake, self._settings.idle_interval)
                    continue
                try:
                    await self._send(entries, executor)
                except MicropacsError as exc:
                    # The catalog failed us (reading the registry, or recording the outcome):
                    # the batch stays leased, and is sent again once its lease ends.
                    log.warning(
                        "batch not sent or not recorded; it is sent again after its lease",
                        extra={"destination": label, "reason": str(exc)},
                    )
                    await _wait(stop, self._wake, self._settings.idle_interval)

    async def _expire(self, now: float) -> None:
        if now - self._expired_at < self._settings.stats_interval:
            return
        self._expired_at = now
        days = self._settings.max_age / 86400
        expired = await self._catalog.expire_forwards(
            self.destination,
            now - self._settings.max_age,
            f"waited longer than the maximum age ({days:g} days)",
        )
        if expired:
            self._metrics.dead_lettered.labels(destination=self.destination).inc(expired)
            log.warning(
                "queue entries expired", extra={"destination": self.destination, "count": expired}
            )

    async def _send(self, entries: list[ForwardEntry], executor: ThreadPoolExecutor) -> None:
        node = await self._nodes.node(self.destination)
        if node is None:
            self._nodes.forget()
            reason = f"{self.destination} is not in the node registry"
            await self._record(entries, [(None, reason)] * len(entries), set(), reason)
            return
        by_syntax: dict[str, list[ForwardEntry]] = {}
        for entry in entries:
            by_syntax.setdefault(entry.target_syntax, []).append(entry)
        for syntax, group in by_syntax.items():
            await self._send_group(node, syntax, group, executor)

    async def _send_group(
        self, node: Node, syntax: str, group: list[ForwardEntry], executor: ThreadPoolExecutor
    ) -> None:
        """Send entries of one target syntax on one association, then record the outcome."""
        loop = asyncio.get_running_loop()
        locations = [location_of(entry) for entry in group]
        # The files are opened on the loop a batch ahead of the thread that sends them.
        opened = OpenedAhead(
            LoopBridge(loop), locations, lambda loc: self._blobs.local_path(loc.object_key)
        )
        results: list[tuple[int | None, str]] = []
        missing: set[int] = set()

        @contextlib.contextmanager
        def open_file(loc: InstanceLocation) -> Iterator[Path]:
            try:
                with opened.open(loc) as path:
                    yield path
            except NotFound:
                missing.add(len(results))  # the index of the instance being sent
                raise

        def sent(loc: InstanceLocation, status: int | None, error: str) -> None:
            results.append((status, error))

        def send() -> str:
            try:
                return self._associations.store(node, locations, open_file, sent, syntax)
            finally:
                opened.close()

        reason = await loop.run_in_executor(executor, send)
        await self._record(group, results, missing, reason)

    async def _record(
        self,
        entries: Sequence[ForwardEntry],
        results: Sequence[tuple[int | None, str]],
        missing: set[int],
        reason: str,
    ) -> None:
        """Remove what was stored, count an attempt for the rest, and judge the node."""
        now = time.time()
        stored: list[str] = []
        failures: list[ForwardFailure] = []
        for index, (entry, (status, error)) in enumerate(zip(entries, results, strict=True)):
            if status in STORED:
                stored.append(entry.entry_id)
                continue
            attempts = entry.attempts + 1
            if index in missing:
                failures.append(ForwardFailure(entry.entry_id, GONE, now, dead=True))
                continue
            why = error or f"refused with status 0x{status or 0:04X}"
            dead = attempts >= self._settings.max_attempts
            if dead:
                why = f"{why} ({attempts} attempts)"
            failures.append(
                ForwardFailure(entry.entry_id, why, now + self._backoff(attempts), dead)
            )
        label = self.destination
        await self._catalog.complete_forwards(stored)
        await self._catalog.fail_forwards(failures)
        self._metrics.sent.labels(destination=label).inc(len(stored))
        self._metrics.failed.labels(destination=label).inc(len(failures))
        given_up = sum(1 for failure in failures if failure.dead)
        if given_up:
            self._metrics.dead_lettered.labels(destination=label).inc(given_up)
        if stored or len(failures) == len(missing):
            if self._failed_batches:
                log.info("destination takes instances again", extra={"destination": label})
            self._failed_batches = 0
            self.failing_since = 0.0
            self._metrics.failing_since.labels(destination=label).set(0)
            return
        self._failed_batches += 1
        wait = self._backoff(self._failed_batches)
        self._resume_at = now + wait
        if not self.failing_since:
            self.failing_since = now
            self._metrics.failing_since.labels(destination=label).set(now)
        log.warning(
            "destination failing; waiting before the next attempt",
            extra={
                "destination": label,
                "reason": reason or (results[0][1] if results else ""),
                "wait": round(wait, 1),
            },
        )

    def _backoff(self, attempts: int) -> float:
        own = self._settings
        return backoff(own.backoff_initial, own.backoff_max, attempts)


class Dispatcher:
    """Starts a sender for every destination that has a queue or a rule, and keeps the
    queues' gauges up to date."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        nodes: NodeCache,
        associations: Associations,
        metrics: RouterMetrics,
        settings: RouterSettings,
        destinations: Iterable[str] = (),
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._nodes = nodes
        self._associations = associations
        self._metrics = metrics
        self._settings = settings
        self._senders: dict[str, DestinationSender] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        for destination in destinations:
            self._sender(destination)

    def sender(self, destination: str) -> DestinationSender | None:
        """The sender of ``destination``, if it has one."""
        return self._senders.get(destination)

    def wake(self, destinations: Iterable[str], *, retry: bool = False) -> None:
        """New entries (or an operator's retry) for these destinations: look now."""
        for destination in destinations:
            self._sender(destination).wake(retry=retry)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the senders until ``stop`` is set, reading the queues' figures meanwhile."""
        self._stop = stop
        for destination in self._senders:
            self._start(destination)
        wake = asyncio.Event()
        try:
            while not stop.is_set():
                await self._observe()
                await _wait(stop, wake, self._settings.stats_interval)
        finally:
            self._stop = None
            tasks = list(self._tasks.values())
            self._tasks.clear()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("a destination's sender failed", exc_info=result)

    def _sender(self, destination: str) -> DestinationSender:
        sender = self._senders.get(destination)
        if sender is None:
            sender = DestinationSender(
                destination,
                self._catalog,
                self._blobs,
                self._nodes,
                self._associations,
                self._metrics,
                self._settings,
            )
            self._senders[destination] = sender
            if self._stop is not None:
                self._start(destination)
        return sender

    def _start(self, destination: str) -> None:
        assert self._stop is not None
        task = self._tasks.get(destination)
        if task is not None and not task.done():
            return
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error(
                "a destination's sender failed; starting it again",
                exc_info=task.exception(),
                extra={"destination": destination},
            )
        self._tasks[destination] = asyncio.create_task(
            self._senders[destination].run(self._stop), name=f"router-{destination}"
        )

    async def _observe(self) -> None:
        try:
            stats = await self._catalog.forward_queues()
        except MicropacsError as exc:
            log.warning("queues unreadable", extra={"reason": str(exc)})
            return
        found: dict[str, ForwardQueueStats] = {s.destination: s for s in stats}
        for destination in found:
            self._sender(destination)
        now = time.time()
        for destination in self._senders:
            self._start(destination)  # again, if it failed
            queue = found.get(destination)
            labels = {"destination": destination}
            self._metrics.depth.labels(**labels).set(queue.waiting if queue else 0)
            self._metrics.dead.labels(**labels).set(queue.dead if queue else 0)
            oldest = queue.oldest_waiting if queue else None
            self._metrics.oldest.labels(**labels).set(
                max(now - oldest, 0.0) if oldest is not None else 0
            )
