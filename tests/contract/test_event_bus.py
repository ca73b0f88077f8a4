"""EventBus contract: what every event bus adapter must do (micropacs.ports.EventBus)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from micropacs.adapters.factory import open_event_bus
from micropacs.config import KafkaSettings
from micropacs.errors import EventBusUnavailable, InvalidInput
from micropacs.ports import Consumer, EventBus, Offsets, Record
from tests.contract.conftest import Runner


@pytest.fixture
def topic() -> str:
    """A topic of the test's own (a shared Kafka keeps topics between tests)."""
    return f"test.{uuid.uuid4().hex[:12]}"


async def _publish_all(bus: EventBus, topic: str, count: int, key: str = "1.2.3") -> None:
    for number in range(count):
        await bus.publish(topic, key, f"event {number}".encode())


async def _drain(bus: EventBus, topic: str, group: str, wait: float = 1.0) -> list[Record]:
    """Every record the group gets from a new consumer, without committing."""
    consumer = await bus.consumer(topic, group)
    records: list[Record] = []
    try:
        while batch := await consumer.poll(100, wait):
            records.extend(batch)
    finally:
        await consumer.close()
    return records


def test_publish_then_poll(event_bus: EventBus, run: Runner, topic: str) -> None:
    async def scenario() -> list[Record]:
        await event_bus.publish(topic, "1.2.840.1", b'{"type":"instance.stored"}')
        consumer = await event_bus.consumer(topic, "index")
        try:
            return await consumer.poll(10, 5.0)
        finally:
            await consumer.close()

    records = run(scenario())

    assert len(records) == 1
    record = records[0]
    assert (record.topic, record.partition, record.key) == (topic, 0, "1.2.840.1")
    assert record.value == b'{"type":"instance.stored"}'
    assert isinstance(record.value, bytes)


def test_records_come_in_publish_order_in_bounded_batches(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> list[list[Record]]:
        await _publish_all(event_bus, topic, 100)
        consumer = await event_bus.consumer(topic, "index")
        batches = []
        try:
            while batch := await consumer.poll(30, 1.0):
                batches.append(batch)
        finally:
            await consumer.close()
        return batches

    batches = run(scenario())

    assert all(1 <= len(batch) <= 30 for batch in batches)
    records = [record for batch in batches for record in batch]
    assert [r.value for r in records] == [f"event {n}".encode() for n in range(100)]
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets))


def test_poll_waits_for_timeout_when_idle(event_bus: EventBus, run: Runner, topic: str) -> None:
    async def scenario() -> tuple[list[Record], float]:
        consumer = await event_bus.consumer(topic, "index")
        started = time.monotonic()
        try:
            return await consumer.poll(10, 0.5), time.monotonic() - started
        finally:
            await consumer.close()

    records, elapsed = run(scenario())

    assert records == []
    assert 0.4 <= elapsed < 5


def test_poll_wakes_up_when_an_event_is_published(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> tuple[list[Record], float]:
        consumer = await event_bus.consumer(topic, "index")
        try:
            waiting = asyncio.create_task(consumer.poll(10, 30.0))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await event_bus.publish(topic, "k", b"wake up")
            records = await waiting
            return records, time.monotonic() - started
        finally:
            await consumer.close()

    records, elapsed = run(scenario())

    assert [r.value for r in records] == [b"wake up"]
    assert elapsed < 5


def test_a_consumer_does_not_hand_out_the_same_record_twice(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> tuple[list[Record], list[Record]]:
        await _publish_all(event_bus, topic, 4)
        consumer = await event_bus.consumer(topic, "index")
        try:
            first = await consumer.poll(2, 5.0)
            second = await consumer.poll(10, 5.0)
        finally:
            await consumer.close()
        return first, second

    first, second = run(scenario())

    assert [r.value for r in first] == [b"event 0", b"event 1"]
    assert [r.value for r in second] == [b"event 2", b"event 3"]


def test_committed_records_are_not_delivered_again(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> list[Record]:
        await _publish_all(event_bus, topic, 5)
        consumer = await event_bus.consumer(topic, "index")
        try:
            await consumer.commit(await consumer.poll(5, 5.0))
        finally:
            await consumer.close()
        await _publish_all(event_bus, topic, 1, key="later")
        return await _drain(event_bus, topic, "index")

    assert [(r.key, r.value) for r in run(scenario())] == [("later", b"event 0")]


def test_uncommitted_records_are_redelivered_to_the_next_consumer(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> list[Record]:
        await _publish_all(event_bus, topic, 5)
        consumer = await event_bus.consumer(topic, "index")
        try:
            records = await consumer.poll(3, 5.0)
            assert len(records) == 3
            await consumer.commit(records[:1])  # crash after writing only the first
        finally:
            await consumer.close()
        return await _drain(event_bus, topic, "index")

    values = [r.value for r in run(scenario())]

    assert values == [b"event 1", b"event 2", b"event 3", b"event 4"]


def test_commit_covers_everything_before_the_highest_record(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> list[Record]:
        await _publish_all(event_bus, topic, 4)
        consumer = await event_bus.consumer(topic, "index")
        try:
            records = await consumer.poll(4, 5.0)
            await consumer.commit([records[2]])
            await consumer.commit([])
        finally:
            await consumer.close()
        return await _drain(event_bus, topic, "index")

    assert [r.value for r in run(scenario())] == [b"event 3"]


def test_a_commit_after_the_group_rebalanced_fails_nothing_and_loses_nothing(
    bus_url: str, run: Runner, topic: str
) -> None:
    """A member joining takes partitions from one that holds a batch: that member's commit
    is no error (a service would stop over an ordinary rebalance), and every event still
    ends up committed by whichever member owns its partition now."""
    group = f"group-{uuid.uuid4().hex[:8]}"

    async def drain_and_commit(consumer: Consumer) -> None:
        while batch := await consumer.poll(100, 1.0):
            await consumer.commit(batch)

    async def scenario() -> tuple[Offsets, Offsets]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=4))
        try:
            for number in range(40):
                await bus.publish(topic, f"1.2.{number}", f"event {number}".encode())
            first = await bus.consumer(topic, group)
            held: list[Record] = []
            while len(held) < 40:
                held += await first.poll(100, 5.0)
            second = await bus.consumer(topic, group)
            taken: list[Record] = []
            deadline = time.monotonic() + 60
            while not taken:
                assert time.monotonic() < deadline, "the new member never got events"
                taken = await second.poll(100, 1.0)
            await first.commit(held)  # partitions of it went to the new member meanwhile
            await second.commit(taken)
            for member in (first, second):
                await drain_and_commit(member)
            await first.close()
            await second.close()
            return await bus.committed_offsets(group, [topic]), await bus.end_offsets([topic])
        finally:
            await bus.close()

    committed, end = run(scenario())

    assert committed == end


def test_groups_are_independent(event_bus: EventBus, run: Runner, topic: str) -> None:
    async def scenario() -> tuple[list[Record], list[Record]]:
        await _publish_all(event_bus, topic, 3)
        index = await event_bus.consumer(topic, "index")
        try:
            await index.commit(await index.poll(10, 5.0))
        finally:
            await index.close()
        return await _drain(event_bus, topic, "index"), await _drain(event_bus, topic, "router")

    index_again, router = run(scenario())

    assert index_again == []
    assert [r.value for r in router] == [b"event 0", b"event 1", b"event 2"]


def test_topics_are_independent(event_bus: EventBus, run: Runner, topic: str) -> None:
    other = topic + ".other"

    async def scenario() -> tuple[list[Record], list[Record]]:
        await event_bus.publish(topic, "a", b"on the topic")
        await event_bus.publish(other, "b", b"on the other")
        return await _drain(event_bus, topic, "index"), await _drain(event_bus, other, "index")

    mine, theirs = run(scenario())

    assert [(r.topic, r.value) for r in mine] == [(topic, b"on the topic")]
    assert [(r.topic, r.value) for r in theirs] == [(other, b"on the other")]


def test_concurrent_publishes_in_one_loop(event_bus: EventBus, run: Runner, topic: str) -> None:
    async def scenario() -> list[Record]:
        await asyncio.gather(
            *(event_bus.publish(topic, f"k{n % 7}", f"{n}".encode()) for n in range(200))
        )
        return await _drain(event_bus, topic, "index")

    records = run(scenario())

    assert sorted(int(r.value) for r in records) == list(range(200))


def test_publishes_from_several_threads_at_once(bus_url: str, run: Runner, topic: str) -> None:
    """Like several ingest processes: each thread has its own loop and its own bus client."""
    threads_count, per_thread = 4, 50
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def producer(number: int) -> None:
        async def publish() -> None:
            bus = await open_event_bus(bus_url)
            try:
                start.wait(timeout=30)
                for sequence in range(per_thread):
                    await bus.publish(topic, f"thread-{number}", f"{number}:{sequence}".encode())
            finally:
                await bus.close()

        try:
            asyncio.run(publish())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []

    async def consume() -> list[Record]:
        bus = await open_event_bus(bus_url)
        try:
            return await _drain(bus, topic, "index")
        finally:
            await bus.close()

    records = run(consume())

    assert len(records) == threads_count * per_thread
    for number in range(threads_count):
        sequences = [int(r.value.split(b":")[1]) for r in records if r.key == f"thread-{number}"]
        assert sequences == list(range(per_thread))  # each producer's order is kept


def test_events_and_offsets_survive_reopening(bus_url: str, run: Runner, topic: str) -> None:
    async def first_life() -> None:
        bus = await open_event_bus(bus_url)
        try:
            await _publish_all(bus, topic, 3)
            consumer = await bus.consumer(topic, "index")
            await consumer.commit(await consumer.poll(1, 5.0))
            await consumer.close()
        finally:
            await bus.close()

    async def second_life() -> list[Record]:
        bus = await open_event_bus(bus_url)
        try:
            return await _drain(bus, topic, "index")
        finally:
            await bus.close()

    run(first_life())

    assert [r.value for r in run(second_life())] == [b"event 1", b"event 2"]


def test_check_passes(event_bus: EventBus, run: Runner) -> None:
    run(event_bus.check())


# -- embedded adapter specifics ---------------------------------------------------------------


def test_sqlite_lag_counts_uncommitted_events(bus_url: str, run: Runner, topic: str) -> None:
    from micropacs.adapters.sqlite_bus import SqliteEventBus

    async def scenario() -> list[int]:
        bus = await open_event_bus(bus_url)
        assert isinstance(bus, SqliteEventBus)
        try:
            lags = [await bus.lag(topic, "index")]
            await _publish_all(bus, topic, 5)
            lags.append(await bus.lag(topic, "index"))
            consumer = await bus.consumer(topic, "index")
            await consumer.commit(await consumer.poll(2, 5.0))
            lags.append(await bus.lag(topic, "index"))
            lags.append(await bus.lag(topic, "router"))
            await consumer.close()
        finally:
            await bus.close()
        return lags

    assert run(scenario()) == [0, 5, 3, 5]


def test_sqlite_refuses_records_of_another_topic(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> None:
        await event_bus.publish(topic + ".x", "k", b"v")
        other = await event_bus.consumer(topic + ".x", "index")
        records = await other.poll(1, 5.0)
        consumer = await event_bus.consumer(topic, "index")
        try:
            await consumer.commit(records)
        finally:
            await consumer.close()
            await other.close()

    with pytest.raises(InvalidInput):
        run(scenario())


def test_sqlite_publish_is_durable_in_the_file(bus_url: str, run: Runner, topic: str) -> None:
    """Once publish returns, another connection (another process) sees the event."""
    import sqlite3
    from contextlib import closing

    from micropacs.adapters.factory import _local_path

    async def publish() -> None:
        bus = await open_event_bus(bus_url)
        try:
            await bus.publish(topic, "k", b"durable")
            with closing(sqlite3.connect(_local_path(bus_url))) as conn:
                rows = conn.execute("SELECT value FROM events WHERE topic = ?", (topic,))
                assert [bytes(v) for (v,) in rows] == [b"durable"]
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                assert mode == "wal"
        finally:
            await bus.close()

    run(publish())


@pytest.mark.parametrize("url", ["kafka://", "amqp://host", "events.db"])
def test_factory_refuses_buses_it_cannot_open(run: Runner, url: str) -> None:
    with pytest.raises(InvalidInput):
        run(open_event_bus(url))


def test_unreachable_kafka_is_unavailable_not_a_crash(run: Runner) -> None:
    with pytest.raises(EventBusUnavailable, match="unreachable"):
        run(open_event_bus("kafka://127.0.0.1:9"))


def test_lag_counts_what_the_group_has_not_committed(
    event_bus: EventBus, run: Runner, topic: str
) -> None:
    async def scenario() -> tuple[dict[int, int], dict[int, int]]:
        await _publish_all(event_bus, topic, 3)
        consumer = await event_bus.consumer(topic, "index")
        try:
            records: list[Record] = []
            while len(records) < 3:
                records += await consumer.poll(10, 5.0)
            before = await consumer.lag()
            await consumer.commit(records[:1])
            return before, await consumer.lag()
        finally:
            await consumer.close()

    before, after = run(scenario())

    assert sum(before.values()) == 3
    assert sum(after.values()) == 2
