"""The distributed EventBus: Apache Kafka through aiokafka.

Publishing waits for every in-sync replica (``acks=all``) with an idempotent
producer, keyed by StudyInstanceUID so a study's events stay in order on one
partition. Consumers join a group, never auto-commit, and commit the offsets
of a batch only after the caller has written it (ARCHITECTURE.md, rule 2). A
member joining or leaving the group moves partitions between members; a commit
for a partition that moved meanwhile is dropped, not raised: its new owner
reads those events again from the last committed offset (at-least-once), where
raising would stop the service over an ordinary rebalance.
Topics are created at start-up with the configured partition count; a
consumer group scales up to that many members. Creating them waits until the
leader of every new partition answers for it (:data:`TOPIC_TIMEOUT`): the
controller acknowledges a CreateTopics as soon as it has recorded it, and the
broker creates the partitions' logs only when it has replayed that record, one
at a time, tens of seconds later on a broker with a backlog. Without the wait
the first publish would spend its own timeout on the broker's backlog.

Every client (producer, consumers, the admin client creating topics) uses the
same security options (:class:`~micropacs.adapters._kafka_security.KafkaSecurity`:
TLS, SASL); a broker that refuses them makes :meth:`KafkaEventBus.open` fail
with :class:`EventBusUnavailable` naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)

from micropacs.adapters._kafka_offsets import GroupProgress, partition_of
from micropacs.adapters._kafka_security import KafkaSecurity, diagnose
from micropacs.errors import EventBusUnavailable, InvalidInput
from micropacs.events import DEAD_LETTER, INSTANCE_STORED, MPPS, PATIENT, WORKLIST
from micropacs.ports import Offsets, Record
from micropacs.redact import safe_url

log = logging.getLogger(__name__)

TOPICS = (INSTANCE_STORED, DEAD_LETTER, WORKLIST, MPPS, PATIENT)

HEARTBEAT_INTERVAL_MS = 500
"""How often a consumer tells its group coordinator it is alive (and hears of rebalances)."""

TOPIC_TIMEOUT = 60.0
"""Seconds new topics may take to be served by their leaders (Kafka's own
``default.api.timeout.ms`` for an admin operation)."""


def parse_url(url: str) -> str:
    """``kafka://host:port[,host:port…]`` as aiokafka's bootstrap servers."""
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise InvalidInput(f"{safe_url(url)!r} is not kafka://HOST:PORT[,HOST:PORT…]")
    return parts.netloc


class KafkaConsumer:
    """A member of a consumer group on one topic."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic

    async def poll(self, max_records: int, timeout: float) -> list[Record]:  # noqa: ASYNC109
        """Up to ``max_records`` records from the partitions this member owns."""
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise EventBusUnavailable(f"Kafka poll failed: {exc}") from exc
        return [
            Record(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=(message.key or b"").decode(errors="replace"),
                value=message.value or b"",
            )
            for messages in batches.values()
            for message in messages
        ]

    async def commit(self, records: Sequence[Record]) -> None:
        """Commit, per partition this member still owns, the offset after the last of
        ``records``; the others went to another member in a rebalance, which reads them
        again."""
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
        owned = self._consumer.assignment()
        kept = {partition: offset for partition, offset in offsets.items() if partition in owned}
        if len(kept) < len(offsets):
            self._moved(sorted(p.partition for p in offsets.keys() - kept.keys()), "reassigned")
        if not kept:
            return
        try:
            await self._consumer.commit(kept)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced between the poll and this commit.
            self._moved(sorted(p.partition for p in kept), type(exc).__name__)
        except KafkaError as exc:
            raise EventBusUnavailable(f"Kafka commit failed: {exc}") from exc

    def _moved(self, partitions: list[int], reason: str) -> None:
        log.warning(
            "commit skipped: the group rebalanced; the partitions' events are delivered again",
            extra={"topic": self._topic, "partitions": partitions, "reason": reason},
        )

    async def lag(self) -> dict[int, int]:
        """Per owned partition, the high watermark minus the committed offset."""
        lags: dict[int, int] = {}
        try:
            for partition in self._consumer.assignment():
                end = self._consumer.highwater(partition)
                if end is None:
                    end = (await self._consumer.end_offsets([partition]))[partition]
                committed = await self._consumer.committed(partition) or 0
                lags[partition.partition] = max(end - committed, 0)
        except KafkaError as exc:
            raise EventBusUnavailable(f"Kafka lag query failed: {exc}") from exc
        return lags

    async def close(self) -> None:
        """Leave the group (its partitions go to the other members)."""
        await self._consumer.stop()


class KafkaEventBus:
    """EventBus on Kafka."""

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: int = 4,
        replication: int = 1,
        publish_timeout: float = 10.0,
        client_id: str = "micropacs",
        topic_prefix: str = "",
        security: KafkaSecurity | None = None,
        publishes: bool = True,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security or KafkaSecurity()
        self._security.check()
        self._options = self._security.client_options()
        self._partitions = partitions
        self._replication = replication
        self._publish_timeout = publish_timeout
        self._client_id = client_id
        self._prefix = topic_prefix
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()
        self._group_progress: GroupProgress | None = None
        self._publishes = publishes
        self._reader: AIOKafkaClient | None = None
        self._reader_lock = asyncio.Lock()

    async def _unreachable(self, exc: BaseException) -> EventBusUnavailable:
        """The error of a client that could not start, with the cause when one is found."""
        reason = await diagnose(self._bootstrap, self._security)
        advice = f"; {reason}" if reason else ""
        return EventBusUnavailable(f"Kafka at {self._bootstrap} unreachable: {exc}{advice}")

    async def open(self) -> None:
        """Create the topics if missing and start the producer; a bus that does not publish
        does nothing until its offsets are first asked for."""
        if not self._publishes:
            return
        await self._create_topics(TOPICS)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            **self._options,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self._publish_timeout * 1000),
            linger_ms=1,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise await self._unreachable(exc) from exc
        self._producer = producer

    async def _create_topics(self, topics: Iterable[str]) -> None:
        """Create the missing ones of ``topics`` (the broker does not auto-create them)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, request_timeout_ms=10000, **self._options
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(self._prefix + topic, self._partitions, self._replication)
                for topic in topics
                if self._prefix + topic not in existing
            ]
            created = True
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:  # another service was first
                    created = False
                log.info("Kafka topics created", extra={"topics": [t.name for t in missing]})
        except KafkaError as exc:
            raise await self._unreachable(exc) from exc
        finally:
            await admin.close()
        if missing:
            # Partition 0 exists whoever created the topic; the others only if we did.
            count = self._partitions if created else 1
            await self._wait_served(
                [TopicPartition(t.name, n) for t in missing for n in range(count)]
            )
        self._known_topics.update(topics)

    async def _wait_served(self, partitions: list[TopicPartition]) -> None:
        """Return once the leader of each of ``partitions`` answers a ListOffsets for it.

        Until the broker has created a partition's log it answers "unknown topic"
        or NOT_LEADER_OR_FOLLOWER; aiokafka retries those until its request timeout.
        """
        probe = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            client_id=self._client_id,
            enable_auto_commit=False,
            request_timeout_ms=int(TOPIC_TIMEOUT * 1000),
            **self._options,
        )
        try:
            await probe.start()
            await probe.end_offsets(partitions)
        except KafkaTimeoutError as exc:
            raise EventBusUnavailable(
                f"Kafka at {self._bootstrap} created the topics but their leaders do not"
                f" serve them after {TOPIC_TIMEOUT}s"
            ) from exc
        except KafkaError as exc:
            raise await self._unreachable(exc) from exc
        finally:
            await probe.stop()

    async def _ensure_topic(self, topic: str) -> None:
        if topic not in self._known_topics:
            await self._create_topics([topic])

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append an event; returns once every in-sync replica has it."""
        if not self._publishes:
            raise EventBusUnavailable("this event bus was opened to read offsets only")
        if self._producer is None:
            raise EventBusUnavailable("Kafka producer not started")
        await self._ensure_topic(topic)
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self._prefix + topic, value, key=key.encode()),
                timeout=self._publish_timeout,
            )
        except (KafkaError, TimeoutError) as exc:
            raise EventBusUnavailable(
                f"Kafka did not acknowledge the event within {self._publish_timeout}s: "
                f"{str(exc) or type(exc).__name__}"
            ) from exc

    async def consumer(self, topic: str, group: str) -> KafkaConsumer:
        """Join ``group`` on ``topic``; a new group starts at the oldest event."""
        await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            self._prefix + topic,
            bootstrap_servers=self._bootstrap,
            group_id=group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300000,
            # Members learn of a rebalance at their next heartbeat. At Kafka's default (3 s)
            # the index's consumers, joining its group one after another at start-up, leave
            # partitions unassigned for seconds, and reads wait that out at the read barrier.
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            **self._options,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise await self._unreachable(exc) from exc
        return KafkaConsumer(consumer, topic)

    async def end_offsets(self, topics: Sequence[str]) -> Offsets:
        """The high watermark of every partition of ``topics`` (one ListOffsets per leader)."""
        return await (await self._progress()).end_offsets(topics)

    async def committed_offsets(self, group: str, topics: Sequence[str]) -> Offsets:
        """Where ``group`` resumes on every partition of ``topics`` (one OffsetFetch)."""
        return await (await self._progress()).committed_offsets(group, topics)

    def partition_of(self, key: str, partitions: int) -> int:
        """The partition the producer sends ``key`` to (murmur2, as every Kafka client)."""
        return partition_of(key, partitions)

    async def _progress(self) -> GroupProgress:
        if self._group_progress is None:
            self._group_progress = GroupProgress(await self._client(), self._prefix)
        return self._group_progress

    async def _client(self) -> AIOKafkaClient:
        """The producer's client, or for a bus that does not publish, one of its own,
        connected at the first call that finds Kafka up."""
        if self._publishes:
            if self._producer is None:
                raise EventBusUnavailable("Kafka producer not started")
            return self._producer.client
        async with self._reader_lock:
            if self._reader is None:
                reader = AIOKafkaClient(
                    bootstrap_servers=self._bootstrap,
                    client_id=self._client_id,
                    request_timeout_ms=int(self._publish_timeout * 1000),
                    **self._options,
                )
                try:
                    await reader.bootstrap()
                except KafkaError as exc:
                    await reader.close()
                    raise await self._unreachable(exc) from exc
                self._reader = reader
            return self._reader

    async def check(self) -> None:
        """Raise EventBusUnavailable unless the cluster answers a metadata request."""
        client = await self._client()
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=5)
        except (KafkaError, TimeoutError) as exc:
            raise EventBusUnavailable(f"Kafka at {self._bootstrap} unreachable: {exc}") from exc

    async def close(self) -> None:
        """Flush and stop the producer (and the reading client)."""
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
            self._group_progress = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
            self._group_progress = None
