"""EventBus contract, a group's progress (end offsets, committed offsets, a key's
partition), and the read barrier built on it, on every event bus adapter."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_event_bus
from micropacs.config import KafkaSettings, ReadBarrierSettings
from micropacs.errors import EventBusUnavailable
from micropacs.ports import EventBus, Offsets, Record
from micropacs.read_barrier import ReadBarrier, ReadBarrierMetrics
from tests.contract.conftest import Runner

PARTITIONS = 4
KEYS = [f"1.2.826.0.1.{number}" for number in range(12)]


@pytest.fixture
def topic() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def group() -> str:
    return f"index-{uuid.uuid4().hex[:8]}"


async def _consume(bus: EventBus, topic: str, group: str, count: int) -> list[Record]:
    """``count`` records of ``topic`` in ``group``, committed."""
    consumer = await bus.consumer(topic, group)
    records: list[Record] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.poll(100, 1.0)
            await consumer.commit(batch)
            records += batch
    finally:
        await consumer.close()
    assert len(records) == count
    return records


def _outcomes(registry: CollectorRegistry, reader: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "micropacs_read_barrier_total", {"reader": reader, "outcome": outcome}
    )
    return value or 0.0


def test_end_offsets_lie_above_every_acknowledged_event(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    async def scenario() -> tuple[Offsets, list[Record], int]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        try:
            for key in KEYS:
                await bus.publish(topic, key, b"{}")
            ends = await bus.end_offsets([topic])
            records = await _consume(bus, topic, group, len(KEYS))
            return ends, records, len(ends)
        finally:
            await bus.close()

    ends, records, partitions = run(scenario())

    assert {t for t, _ in ends} == {topic}
    for record in records:
        assert record.offset < ends[topic, record.partition]
    assert partitions in (1, PARTITIONS)  # one partition in SQLite, as many as made in Kafka


def test_a_key_goes_to_the_partition_partition_of_names(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    async def scenario() -> tuple[list[Record], int, EventBus]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        try:
            for key in KEYS:
                await bus.publish(topic, key, b"{}")
            partitions = len(await bus.end_offsets([topic]))
            return await _consume(bus, topic, group, len(KEYS)), partitions, bus
        finally:
            await bus.close()

    records, partitions, bus = run(scenario())

    assert len({record.partition for record in records}) == min(partitions, 4)
    for record in records:
        assert record.partition == bus.partition_of(record.key, partitions)


def test_committed_offsets_reach_the_end_offsets_once_the_group_commits_all(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    async def scenario() -> tuple[Offsets, Offsets, Offsets, Offsets]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        try:
            await bus.publish(topic, KEYS[0], b"{}")
            await bus.publish(topic, KEYS[0], b"{}")
            ends = await bus.end_offsets([topic])
            before = await bus.committed_offsets(group, [topic])
            consumer = await bus.consumer(topic, group)
            try:
                first: list[Record] = []
                while not first:
                    first = await consumer.poll(1, 5.0)
                await consumer.commit(first)
                halfway = await bus.committed_offsets(group, [topic])
            finally:
                await consumer.close()
            await _consume(bus, topic, group, 1)
            return ends, before, halfway, await bus.committed_offsets(group, [topic])
        finally:
            await bus.close()

    ends, before, halfway, after = run(scenario())

    used = [key for key, end in ends.items() if end > before[key]]
    assert len(used) == 1  # one key: one partition holds both events
    assert halfway[used[0]] < ends[used[0]]
    assert after == ends  # the empty partitions too: nothing there to apply


def test_the_barrier_waits_until_the_group_has_applied_what_was_acknowledged(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> tuple[bool, bool, float, float]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        barrier = ReadBarrier(
            bus, group, ReadBarrierSettings(timeout=20), ReadBarrierMetrics(registry), [topic]
        )
        try:
            await bus.publish(topic, KEYS[0], b"{}")
            waiting = asyncio.create_task(barrier.wait("test", {topic: None}))
            await asyncio.sleep(0.5)
            still_waiting = not waiting.done()
            applied_at = time.monotonic()
            await _consume(bus, topic, group, 1)
            reached = await waiting
            return still_waiting, reached, time.monotonic() - applied_at, 0.0
        finally:
            await barrier.close()
            await bus.close()

    still_waiting, reached, after_commit, _ = run(scenario())

    assert still_waiting, "the barrier let a read through before the event was applied"
    assert reached
    assert after_commit < 5
    assert _outcomes(registry, "test", "waited") == 1


def test_the_barrier_passes_at_once_when_the_group_is_caught_up_and_shares_readings(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> list[bool]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        barrier = ReadBarrier(
            bus, group, ReadBarrierSettings(timeout=5), ReadBarrierMetrics(registry), [topic]
        )
        try:
            await bus.publish(topic, KEYS[0], b"{}")
            await _consume(bus, topic, group, 1)
            await barrier.wait("test", {topic: None})  # learns the committed offsets
            return list(await asyncio.gather(*(barrier.wait("test", {}) for _ in range(50))))
        finally:
            await barrier.close()
            await bus.close()

    passed = run(scenario())

    assert all(passed)
    assert _outcomes(registry, "test", "passed") == 51
    end_readings = registry.get_sample_value(
        "micropacs_read_barrier_readings_total", {"kind": "end"}
    )
    assert end_readings is not None and end_readings <= 3  # 50 concurrent reads, one reading


def test_a_read_of_one_key_waits_only_for_that_keys_partition(
    bus_url: str, run: Runner, topic: str, group: str, backend: str
) -> None:
    if backend != "stack":
        pytest.skip("the embedded log has one partition: every key shares it")
    registry = CollectorRegistry()

    async def scenario() -> tuple[bool, bool]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        barrier = ReadBarrier(
            bus, group, ReadBarrierSettings(timeout=1), ReadBarrierMetrics(registry), [topic]
        )
        try:
            mine = KEYS[0]
            await bus.publish(topic, mine, b"{}")
            other = _key_on_another_partition(bus, mine, len(await bus.end_offsets([topic])))
            await _consume(bus, topic, group, 1)
            await bus.publish(topic, other, b"{}")  # never applied
            return await barrier.wait("test", {topic: [mine]}), await barrier.wait(
                "test", {topic: [other]}
            )
        finally:
            await barrier.close()
            await bus.close()

    mine_reached, other_reached = run(scenario())

    assert mine_reached
    assert not other_reached
    assert _outcomes(registry, "test", "timeout") == 1


def _key_on_another_partition(bus: EventBus, key: str, partitions: int) -> str:
    return next(
        k for k in KEYS if bus.partition_of(k, partitions) != bus.partition_of(key, partitions)
    )


def test_the_barrier_gives_up_at_its_bound_and_counts_it(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> tuple[bool, float]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        barrier = ReadBarrier(
            bus, group, ReadBarrierSettings(timeout=0.3), ReadBarrierMetrics(registry), [topic]
        )
        try:
            await bus.publish(topic, KEYS[0], b"{}")
            started = time.monotonic()
            reached = await barrier.wait("test", {topic: None})
            return reached, time.monotonic() - started
        finally:
            await barrier.close()
            await bus.close()

    reached, waited = run(scenario())

    assert not reached
    assert 0.3 <= waited < 1.5
    assert _outcomes(registry, "test", "timeout") == 1
    behind = registry.get_sample_value("micropacs_read_barrier_behind_offsets")
    assert behind is not None and behind >= 1  # one event; the embedded log's offsets have gaps


def test_a_read_beside_the_barrier_runs_once_when_caught_up_and_again_when_not(
    bus_url: str, run: Runner, topic: str, group: str
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> tuple[list[str], list[str], str]:
        bus = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        barrier = ReadBarrier(
            bus, group, ReadBarrierSettings(timeout=20), ReadBarrierMetrics(registry), [topic]
        )
        state = {"applied": "before"}
        calls: list[str] = []

        async def read() -> str:
            calls.append(state["applied"])
            return state["applied"]

        try:
            await bus.publish(topic, KEYS[0], b"{}")
            await _consume(bus, topic, group, 1)
            await barrier.wait("test", {topic: None})  # learns the committed offsets
            caught_up = list(calls)
            await barrier.read("test", {topic: None}, read)
            once = list(calls)
            await bus.publish(topic, KEYS[0], b"{}")

            async def apply_later() -> None:
                await asyncio.sleep(0.3)
                state["applied"] = "after"
                await _consume(bus, topic, group, 1)

            applying = asyncio.create_task(apply_later())
            result = await barrier.read("test", {topic: None}, read)
            await applying
            return caught_up + once, calls[len(once) :], result
        finally:
            await barrier.close()
            await bus.close()

    first, second, result = run(scenario())

    assert first == ["before"]  # one read, kept: the index had applied everything
    assert second == ["before", "after"]  # read at once, then again once applied
    assert result == "after"
    assert _outcomes(registry, "test", "waited") == 1


def test_a_bus_opened_to_read_offsets_sees_what_another_publishes(
    bus_url: str, run: Runner, topic: str, group: str, backend: str
) -> None:
    async def scenario() -> tuple[Offsets, Offsets, Offsets, Offsets, bool]:
        writer = await open_event_bus(bus_url, KafkaSettings(partitions=PARTITIONS))
        reader = await open_event_bus(
            bus_url, KafkaSettings(partitions=PARTITIONS), publishes=False
        )
        try:
            await writer.publish(topic, KEYS[0], b"{}")
            ends = await reader.end_offsets([topic]), await writer.end_offsets([topic])
            await _consume(writer, topic, group, 1)
            committed = await reader.committed_offsets(group, [topic])
            written = await writer.committed_offsets(group, [topic])
            try:
                await reader.publish(topic, KEYS[0], b"{}")
                refused = False
            except EventBusUnavailable:
                refused = True
            return ends[0], ends[1], committed, written, refused
        finally:
            await reader.close()
            await writer.close()

    read_ends, written_ends, committed, written, refused = run(scenario())

    assert read_ends == written_ends
    assert committed == written == written_ends
    assert refused == (backend == "stack")  # the embedded log has no producer to leave out


def test_a_bus_opened_to_read_offsets_starts_without_kafka_and_the_barrier_lets_reads_by(
    run: Runner, backend: str
) -> None:
    if backend != "stack":
        pytest.skip("Kafka's reading client only")
    registry = CollectorRegistry()

    async def scenario() -> tuple[bool, float]:
        bus = await open_event_bus("kafka://127.0.0.1:9", publishes=False)  # nothing listens
        barrier = ReadBarrier(
            bus, "index", ReadBarrierSettings(timeout=1), ReadBarrierMetrics(registry)
        )
        try:
            started = time.monotonic()
            reached = await barrier.wait("test", {})
            return reached, time.monotonic() - started
        finally:
            await barrier.close()
            await bus.close()

    reached, seconds = run(scenario())

    assert not reached
    assert seconds < 5
    assert _outcomes(registry, "test", "unavailable") == 1
