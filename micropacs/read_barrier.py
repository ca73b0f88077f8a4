"""Read-your-writes over an asynchronous index: wait until it has applied what was acknowledged.

Ingest answers Success once an event is on the bus; the index writes the
catalog from the bus a moment later. A read of what the index writes (a
C-FIND, a retrieval, a worklist query) first calls :meth:`ReadBarrier.wait`:
it reads the bus's end offsets, in a reading begun after the request
arrived, so every event acknowledged before the request lies below them,
and waits until the index group's committed offsets reach them. The group
commits only after its catalog writes (ARCHITECTURE.md, rule 2), so the
read that follows sees every acknowledged event.

Cheap when the index is caught up: the committed offsets seen last are
kept (a group's offsets only grow), so a request whose end offsets are
already below them costs one end-offset reading, and readings are shared
by every request that arrived while the previous one ran, at most one per
``fetch_interval``. :meth:`ReadBarrier.read` even hides that reading: it
runs the read beside it and keeps the result when the offsets known before
the read began were enough, running it again only when they were not. A
request that names a study waits only for the partition its key goes to.

Bounded: past ``timeout`` the read is answered from what the catalog holds,
counted (``micropacs_read_barrier_total{outcome="timeout"}``) and logged
without patient data, how far behind the index was in the log line and in
``micropacs_read_barrier_behind_offsets``; a bus that cannot say is counted as ``unavailable``.
Writes never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from micropacs.config import ReadBarrierSettings
from micropacs.events import INSTANCE_STORED, MPPS, PATIENT, WORKLIST
from micropacs.ports import EventBus, Offsets

T = TypeVar("T")

log = logging.getLogger(__name__)

INDEXED_TOPICS = (INSTANCE_STORED, PATIENT, WORKLIST, MPPS)
"""The topics the index applies to the catalog and the worklist store."""

Scope = Mapping[str, Collection[str] | None]
"""What a read depends on: per topic, the keys whose partitions it reads (None: all)."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines of one reader's barrier timeouts (or bus failures)."""
PROGRESS_TIMEOUT = 2.0
"""Seconds a readiness look at the index's progress may take."""

FIRST_DELAY = 0.001
LONGEST_DELAY = 0.01
"""Seconds between two readings of the committed offsets while a request waits."""


class ReadBarrierMetrics:
    """Outcomes and time of the barrier, and how far behind the index was at the last look."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "micropacs_read_barrier_total",
            "Reads that went through the read barrier, by reader and outcome: passed (the index"
            " had applied everything), waited, timeout (answered from the catalog as it was),"
            " unavailable (the event bus could not say).",
            ["reader", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "micropacs_read_barrier_seconds",
            "Time a read spent in the read barrier, by reader.",
            ["reader"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=registry,
        )
        self.behind = Gauge(
            "micropacs_read_barrier_behind_offsets",
            "How far the index was behind the acknowledged events at the barrier's last look,"
            " in offsets summed over partitions: events on Kafka, an upper bound on the"
            " embedded log (whose topics share one sequence); 0 when caught up.",
            registry=registry,
            multiprocess_mode="livemostrecent",  # the latest look of any live process
        )
        self.readings = Counter(
            "micropacs_read_barrier_readings_total",
            "Readings of the event bus's offsets, by kind (end, committed); each is shared by"
            " the requests that waited for it.",
            ["kind"],
            registry=registry,
        )


class Shared(Generic[T]):
    """Calls of ``call`` shared by concurrent callers.

    Each caller gets the result of a call that began after it asked (so no
    caller sees a reading older than its request), calls run one at a time,
    at most one per ``interval`` seconds, and every caller waiting for the
    next one shares it.
    """

    def __init__(self, call: Callable[[], Awaitable[T]], interval: float) -> None:
        self._call = call
        self._interval = interval
        self._next: asyncio.Future[T] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._last_start = -math.inf

    async def get(self) -> T:
        """The result of the next call to begin."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        future = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="micropacs-read-barrier")
        return await asyncio.shield(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._next is not None:
            pause = self._last_start + self._interval - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            future, self._next = self._next, None
            self._last_start = loop.time()
            try:
                result = await self._call()
            except asyncio.CancelledError:
                future.cancel()  # closing: its callers stop waiting too
                raise
            except Exception as exc:  # noqa: BLE001 -- every waiting caller hears of it
                future.set_exception(exc)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Stop the call in progress (its callers get CancelledError)."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._next is not None and not self._next.done():
            self._next.cancel()


def _retrieve(future: asyncio.Future[T]) -> None:
    """Mark an exception as seen: the callers that would have may have timed out."""
    if not future.cancelled():
        future.exception()


class ReadBarrier:
    """Waits, before a read of what the index writes, until the index has applied every
    event acknowledged before the read arrived; see the module's documentation."""

    def __init__(
        self,
        bus: EventBus,
        group: str,
        settings: ReadBarrierSettings,
        metrics: ReadBarrierMetrics,
        topics: Sequence[str] = INDEXED_TOPICS,
    ) -> None:
        self._bus = bus
        self._group = group
        self._settings = settings
        self._metrics = metrics
        self._topics = tuple(topics)
        self._ends = Shared(self._read_ends, settings.fetch_interval)
        self._committed = Shared(self._read_committed, settings.fetch_interval)
        self._applied: Offsets = {}
        self._last_ends: Offsets = {}
        self._lagging: set[str] = set()
        """Readers whose last look found the index behind."""
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}

    async def read(self, reader: str, scope: Scope, read: Callable[[], Awaitable[T]]) -> T:
        """``read()`` as it is once the index has applied, on the partitions of ``scope``,
        every event acknowledged before the call.

        The read runs at once, beside the end-offset reading, and is kept when the
        committed offsets known before it began already reach those end offsets (the
        index was caught up: nothing added to the read's time); otherwise it runs again
        once the barrier is passed, or has timed out (the bound counts from the end of
        the first read). While the index was behind at this reader's last look (a store
        in progress), the read waits first and runs once, so that a costly query is not
        run twice under load.
        """
        if self._settings.timeout <= 0:
            return await read()
        if reader in self._lagging:  # a read at once would likely be thrown away
            await self.wait(reader, scope)
            return await read()
        known = self._applied  # replaced, never changed in place: a snapshot as it is
        reading = asyncio.ensure_future(self._ends.get())
        reading.add_done_callback(_retrieve)
        try:
            result = await read()
        except BaseException:
            reading.cancel()
            raise
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.timeout):
                targets = self._targets(await reading, scope)
        except Exception as exc:  # noqa: BLE001 -- the barrier never fails a read
            self._unavailable(reader, exc, started)
            return result
        if all(known.get(key, 0) >= end for key, end in targets.items()):
            self._count(reader, "passed", started)
            return result
        remaining = self._settings.timeout - (time.monotonic() - started)
        await self._settle(reader, targets, remaining, started)
        return await read()

    async def wait(self, reader: str, scope: Scope) -> bool:
        """Return once the index has applied, on the partitions of ``scope``, every event
        acknowledged before the call (True), or after the timeout, when the bus cannot
        say, or with the barrier turned off (False: the store may be behind)."""
        timeout = self._settings.timeout
        if timeout <= 0:
            return False
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                targets = self._targets(await self._ends.get(), scope)
        except Exception as exc:  # noqa: BLE001 -- the barrier never fails a read
            self._unavailable(reader, exc, started)
            return False
        return await self._settle(reader, targets, timeout - (time.monotonic() - started), started)

    async def _settle(
        self, reader: str, targets: Offsets, remaining: float, started: float
    ) -> bool:
        """Wait up to ``remaining`` seconds for the committed offsets to reach ``targets``."""
        outcome = "passed"
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                delay = FIRST_DELAY
                while not self._reached(targets):
                    self._applied = _highest(self._applied, await self._committed.get())
                    if self._reached(targets):
                        break
                    outcome = "waited"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LONGEST_DELAY)
        except TimeoutError:
            self._warn(
                reader,
                "timeout",
                "read barrier timed out: answered from the catalog as it is",
                {"timeout": self._settings.timeout, "behind_offsets": self._behind()},
            )
            self._count(reader, "timeout", started)
            return False
        except Exception as exc:  # noqa: BLE001 -- the barrier never fails a read
            self._unavailable(reader, exc, started)
            return False
        self._count(reader, outcome, started)
        return True

    def _unavailable(self, reader: str, exc: BaseException, started: float) -> None:
        """The bus could not say (an error, or no answer within the bound)."""
        reason = str(exc) or type(exc).__name__
        self._warn(
            reader,
            "unavailable",
            "read barrier: the event bus cannot say how far the index is",
            {"reason": reason},
        )
        self._count(reader, "unavailable", started)

    def _warn(self, reader: str, kind: str, message: str, extra: dict[str, object]) -> None:
        """Log at most once per :data:`LOG_INTERVAL` per reader and kind (an index down
        would otherwise log every read), with how many were left out."""
        now = time.monotonic()
        last, left_out = self._warned.get((reader, kind), (-math.inf, 0))
        if now - last < LOG_INTERVAL:
            self._warned[reader, kind] = (last, left_out + 1)
            return
        self._warned[reader, kind] = (now, 0)
        log.warning(message, extra={"reader": reader, "left_out": left_out, **extra})

    def _count(self, reader: str, outcome: str, started: float) -> None:
        if outcome == "passed":
            self._lagging.discard(reader)
        else:
            self._lagging.add(reader)
        self._metrics.behind.set(self._behind())
        self._metrics.outcomes.labels(reader=reader, outcome=outcome).inc()
        self._metrics.seconds.labels(reader=reader).observe(time.monotonic() - started)

    async def progress(self) -> dict[str, int]:
        """A fresh look at how far behind the index is on each topic, in offsets."""
        async with asyncio.timeout(PROGRESS_TIMEOUT):
            self._targets(await self._ends.get(), {})
            self._applied = _highest(self._applied, await self._committed.get())
        behind = self._behind_by_topic()
        self._metrics.behind.set(sum(behind.values()))
        return behind

    async def close(self) -> None:
        """Stop the readings in progress."""
        await self._ends.close()
        await self._committed.close()

    async def _read_ends(self) -> Offsets:
        self._metrics.readings.labels(kind="end").inc()
        return await self._bus.end_offsets(self._topics)

    async def _read_committed(self) -> Offsets:
        self._metrics.readings.labels(kind="committed").inc()
        return await self._bus.committed_offsets(self._group, self._topics)

    def _targets(self, ends: Offsets, scope: Scope) -> Offsets:
        """The end offsets of the partitions ``scope`` reads (every partition when empty)."""
        self._last_ends = ends
        for key, end in ends.items():
            if end < self._applied.get(key, 0):  # only a topic made again: forget it
                self._applied = {**self._applied, key: 0}
        if not scope:
            return ends
        counts: dict[str, int] = {}
        for topic, _partition in ends:
            counts[topic] = counts.get(topic, 0) + 1
        wanted: set[tuple[str, int]] = set()
        for topic, keys in scope.items():
            if keys is None:
                wanted.update(key for key in ends if key[0] == topic)
            else:
                wanted.update(
                    (topic, self._bus.partition_of(k, counts.get(topic, 1))) for k in keys
                )
        return {key: offset for key, offset in ends.items() if key in wanted}

    def _reached(self, targets: Offsets) -> bool:
        return all(self._applied.get(key, 0) >= end for key, end in targets.items())

    def _behind_by_topic(self) -> dict[str, int]:
        """Offsets between the last end offsets seen and what the index had applied."""
        behind = dict.fromkeys(self._topics, 0)
        for (topic, partition), end in self._last_ends.items():
            behind[topic] += max(end - self._applied.get((topic, partition), 0), 0)
        return behind

    def _behind(self) -> int:
        return sum(self._behind_by_topic().values())


def _highest(known: Offsets, seen: Offsets) -> Offsets:
    """The committed offsets, never going back (a reading may cross a newer one)."""
    merged = dict(known)
    for key, offset in seen.items():
        merged[key] = max(offset, merged.get(key, 0))
    return merged
