"""The embedded EventBus: a durable append-only log in one SQLite file.

Every topic has one partition (0). Events get increasing offsets (shared by
all topics, so a topic's offsets have gaps); each consumer group stores the
last offset it has processed per topic. Delivery is at-least-once, like the
Kafka adapter with manual commits: records handed out but not committed are
delivered again to the group's next consumer.

Durability: the log runs in WAL mode with ``synchronous=FULL``, so the WAL is
fsynced at every COMMIT and :meth:`SqliteEventBus.publish` returns only once
the event would survive a power loss (``NORMAL`` would only survive a
process crash, breaking ARCHITECTURE.md rule 1). The cost of one fsync per
commit is shared: publishes that arrive while a commit is in progress are
written together in the next transaction (group commit).

Concurrency: one writer thread per bus instance takes the write lock with
``BEGIN IMMEDIATE`` and retries while another process holds it, so several
ingest processes can publish into the same file; reads run on a small pool
of threads with their own connections and never block the writer (WAL).
One consumer per group and topic at a time: with a single partition there
is nothing to share out between members.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from micropacs.adapters import _sqlite
from micropacs.errors import EventBusUnavailable, InvalidInput
from micropacs.ports import Offsets, Record

T = TypeVar("T")

PARTITION = 0
"""The only partition of every topic."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, "offset");
CREATE TABLE IF NOT EXISTS consumer_offsets (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    committed INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY ("group", topic)
) WITHOUT ROWID;
"""

_BATCH = 512


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class _Job:
    """One piece of work for the writer thread, run inside its transaction."""

    run: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    notifies: bool = False


class SqliteEventBus:
    """A durable event log with consumer groups in the SQLite file at ``path``.

    ``busy_timeout`` is how long (seconds) a write waits for other processes
    holding the lock before it fails with EventBusUnavailable;
    ``poll_interval`` is how often an idle consumer looks for events
    published by other processes (those of this process wake it at once).
    """

    def __init__(
        self, path: Path, *, busy_timeout: float = 30.0, poll_interval: float = 0.1
    ) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._opened = False
        self._closed = False

    @property
    def path(self) -> Path:
        """The SQLite file holding the log."""
        return self._path

    async def open(self) -> None:
        """Create the file and its tables if needed; later calls do nothing."""
        if not self._opened:
            await self._write(lambda conn: None)
            self._opened = True

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append an event; returns after the COMMIT that makes it durable."""
        if not topic:
            raise InvalidInput("an event needs a topic")
        data = bytes(value)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO events (topic, key, value, created_at) VALUES (?, ?, ?, ?)",
                (topic, key, data, _now()),
            )

        await self._write(insert, notifies=True)

    async def consumer(self, topic: str, group: str) -> SqliteConsumer:
        """A member of ``group`` on ``topic``, starting after the group's committed offset."""
        if not topic or not group:
            raise InvalidInput("a consumer needs a topic and a group")
        await self.open()
        committed = await self._read(_committed, topic, group)
        return SqliteConsumer(self, topic, group, committed)

    async def lag(self, topic: str, group: str) -> int:
        """How many events of ``topic`` the group has not committed yet."""
        await self.open()

        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                'SELECT count(*) FROM events WHERE topic = ? AND "offset" > ?',
                (topic, _committed(conn, topic, group)),
            ).fetchone()
            return int(row[0])

        return await self._read(count)

    async def end_offsets(self, topics: Sequence[str]) -> Offsets:
        """Each topic's one partition: the offset after its last event (0 for none)."""
        await self.open()

        def ends(conn: sqlite3.Connection) -> Offsets:
            offsets: Offsets = {}
            for topic in topics:
                row = conn.execute(
                    'SELECT "offset" FROM events WHERE topic = ? ORDER BY "offset" DESC LIMIT 1',
                    (topic,),
                ).fetchone()
                offsets[topic, PARTITION] = int(row[0]) + 1 if row else 0
            return offsets

        return await self._read(ends)

    async def committed_offsets(self, group: str, topics: Sequence[str]) -> Offsets:
        """Each topic's one partition: the offset after the group's last commit (0 for none)."""
        await self.open()

        def committed(conn: sqlite3.Connection) -> Offsets:
            rows = conn.execute(
                'SELECT topic, committed FROM consumer_offsets WHERE "group" = ?', (group,)
            ).fetchall()
            stored = {topic: int(offset) + 1 for topic, offset in rows}
            return {(topic, PARTITION): stored.get(topic, 0) for topic in topics}

        return await self._read(committed)

    def partition_of(self, key: str, partitions: int) -> int:
        """Always the one partition."""
        return PARTITION

    async def check(self) -> None:
        """Take and release the write lock; raise EventBusUnavailable if that fails."""
        await self._write(lambda conn: None)
        self._opened = True

    async def close(self) -> None:
        """Finish queued writes, stop the threads and close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer, readers = self._writer, self._readers
        if writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(writer.join)
        if readers is not None:
            await asyncio.to_thread(readers.shutdown)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- consumer support -----------------------------------------------------------------

    async def _fetch(self, topic: str, after: int, limit: int) -> list[Record]:
        def fetch(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(
                'SELECT "offset", key, value FROM events WHERE topic = ? AND "offset" > ?'
                ' ORDER BY "offset" LIMIT ?',
                (topic, after, limit),
            ).fetchall()
            return [
                Record(topic=topic, partition=PARTITION, offset=o, key=k, value=bytes(v))
                for o, k, v in rows
            ]

        return await self._read(fetch)

    async def _commit(self, topic: str, group: str, offset: int) -> None:
        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                'INSERT INTO consumer_offsets ("group", topic, committed, updated_at)'
                " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " committed = max(committed, excluded.committed), updated_at = excluded.updated_at",
                (group, topic, offset, _now()),
            )

        await self._write(store)

    def _watch(self) -> tuple[int, asyncio.Event]:
        """Register an event set when this bus publishes (from any thread or loop)."""
        event = asyncio.Event()
        token = id(event)
        with self._lock:
            self._waiters[token] = (asyncio.get_running_loop(), event)
        return token, event

    def _unwatch(self, token: int) -> None:
        with self._lock:
            self._waiters.pop(token, None)

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters.values())
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    # -- threads and connections ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = _sqlite.connect(self._path, self._busy_timeout)
        with self._lock:
            self._connections.append(conn)
        return conn

    async def _write(self, run: Callable[[sqlite3.Connection], Any], notifies: bool = False) -> Any:
        job = _Job(run=run, notifies=notifies)
        with self._lock:
            if self._closed:
                raise EventBusUnavailable("the event bus is closed")
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="micropacs-bus-writer", daemon=True
                )
                self._writer.start()
            self._jobs.put(job)
        return await asyncio.wrap_future(job.future)

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                if conn is None:
                    conn = self._open_writer()
                results = self._transaction(conn, batch)
            except Exception as exc:  # noqa: BLE001 -- every waiter must hear of it
                error = self._unavailable(exc)
                for job in batch:
                    job.future.set_exception(error)
            else:
                for job, result in zip(batch, results, strict=True):
                    job.future.set_result(result)
                if any(job.notifies for job in batch):
                    self._notify()
            if stop:
                return

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        _sqlite.use_wal(conn, self._busy_timeout)
        _sqlite.retry(lambda: conn.executescript(_SCHEMA), self._busy_timeout)
        return conn

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[Any]:
        return _sqlite.write_transaction(
            conn, lambda c: [job.run(c) for job in batch], self._busy_timeout
        )

    async def _read(self, run: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._closed:
                raise EventBusUnavailable("the event bus is closed")
            if self._readers is None:
                self._readers = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="micropacs-bus-reader"
                )
            readers = self._readers
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(readers, self._read_in_thread, run, args)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _read_in_thread(self, run: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return _sqlite.retry(lambda: run(conn, *args), self._busy_timeout)

    def _unavailable(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error | OSError):
            return EventBusUnavailable(
                f"event log {self._path}: {exc}; check that its disk has space and the file"
                " is writable by the micropacs user"
            )
        return exc


def _committed(conn: sqlite3.Connection, topic: str, group: str) -> int:
    row = conn.execute(
        'SELECT committed FROM consumer_offsets WHERE "group" = ? AND topic = ?', (group, topic)
    ).fetchone()
    return int(row[0]) if row else 0


class SqliteConsumer:
    """A consumer of one topic in one group; see :class:`SqliteEventBus`.

    It keeps its own position, so records it has handed out are not handed
    out again by this instance even before they are committed.
    """

    def __init__(self, bus: SqliteEventBus, topic: str, group: str, committed: int) -> None:
        self._bus = bus
        self._topic = topic
        self._group = group
        self._position = committed
        self._closed = False

    @property
    def position(self) -> int:
        """Offset of the last record handed out (or committed before this consumer began)."""
        return self._position

    async def poll(self, max_records: int, timeout: float) -> list[Record]:  # noqa: ASYNC109
        """Up to ``max_records`` records after the position, waiting up to ``timeout`` seconds."""
        if max_records < 1:
            raise InvalidInput(f"max_records must be at least 1, not {max_records}")
        if self._closed:
            raise EventBusUnavailable("this consumer is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            # Watch before reading, so a publish between the read and the wait is not missed.
            token, published = self._bus._watch()
            try:
                records = await self._bus._fetch(self._topic, self._position, max_records)
                if records:
                    self._position = records[-1].offset
                    return records
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        published.wait(), min(remaining, self._bus._poll_interval)
                    )
            finally:
                self._bus._unwatch(token)

    async def commit(self, records: Sequence[Record]) -> None:
        """Store the highest offset of ``records`` as the group's committed offset."""
        if not records:
            return
        if any(record.topic != self._topic for record in records):
            raise InvalidInput(f"records of another topic than {self._topic!r}")
        await self._bus._commit(self._topic, self._group, max(r.offset for r in records))

    async def lag(self) -> dict[int, int]:
        """The one partition's uncommitted events."""
        return {0: await self._bus.lag(self._topic, self._group)}

    async def close(self) -> None:
        """Stop consuming; records not committed go to the group's next consumer."""
        self._closed = True
