"""What one reading of a group's progress costs on Kafka: the read barrier's requests
(micropacs/adapters/_kafka_offsets.py, one request each on an open client) against
aiokafka's own helpers (``AIOKafkaConsumer.end_offsets``,
``AIOKafkaAdminClient.list_consumer_group_offsets`` with the coordinator known).

Runs on the stack of ``make stack-up`` (started if missing, left running): a topic
of its own with four partitions, a few events, one group that committed them.

    python -m bench.kafka_offsets [--readings 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import save
from micropacs.adapters.factory import open_event_bus
from micropacs.config import KafkaSettings
from stack import servers

PARTITIONS = 4


async def timed(call: Callable[[], Awaitable[Any]], readings: int) -> dict[str, float]:
    """Median and p95 of ``readings`` calls, in ms, after five to warm up."""
    for _ in range(5):
        await call()
    samples = []
    for _ in range(readings):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
    }


async def measure(url: str, readings: int) -> dict[str, Any]:
    bootstrap = url.removeprefix("kafka://")
    topic, group = f"bench.{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    bus = await open_event_bus(url, KafkaSettings(partitions=PARTITIONS))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for number in range(20):
            await bus.publish(topic, f"1.2.3.{number}", b"{}")
        member = await bus.consumer(topic, group)
        taken = 0
        while taken < 20:
            records = await member.poll(100, 5.0)
            await member.commit(records)
            taken += len(records)
        await member.close()
        await consumer.start()
        await admin.start()
        partitions = [TopicPartition(topic, n) for n in range(PARTITIONS)]
        coordinator = await admin.find_coordinator(group)
        return {
            "end_offsets_barrier": await timed(lambda: bus.end_offsets([topic]), readings),
            "end_offsets_aiokafka_consumer": await timed(
                lambda: consumer.end_offsets(partitions), readings
            ),
            "committed_barrier": await timed(
                lambda: bus.committed_offsets(group, [topic]), readings
            ),
            "committed_aiokafka_admin": await timed(
                lambda: admin.list_consumer_group_offsets(group, coordinator, partitions),
                readings,
            ),
        }
    finally:
        await consumer.stop()
        await admin.close()
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200)
    args = parser.parse_args()
    stack = servers.up(servers.STACK_HOME / "run")  # the running stack, started if missing
    result = asyncio.run(measure(stack.env["MICROPACS_STORAGE__BUS_URL"], args.readings))
    for name, figures in result.items():
        print(f"{name}: {figures['median_ms']} ms median, {figures['p95_ms']} p95")
    save("kafka_offsets", {"partitions": PARTITIONS, **result})


if __name__ == "__main__":
    main()
