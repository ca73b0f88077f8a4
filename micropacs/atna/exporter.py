"""The ATNA exporter: the audit topic, in its own consumer group, to the repository.

Each record of a polled batch becomes its audit message (:mod:`.messages`),
framed and sent (:mod:`.syslog`); the batch's offsets are committed only once
every message of it was accepted (at-least-once: a crash or a stop in between
sends some again, which a repository tells apart by content). While the
repository is down the exporter retries with bounded backoff and keeps its
place; nothing is skipped. A record that cannot be decoded is logged (by
offset, never its content) and passed over: it would never become sendable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from micropacs.atna.messages import Source, audit_message
from micropacs.atna.syslog import (
    AuditRepositoryUnavailable,
    SyslogSender,
    client_tls,
    syslog_message,
)
from micropacs.config import AtnaSettings, Settings
from micropacs.errors import InvalidInput
from micropacs.events import AUDIT, AuditRecorded
from micropacs.ports import EventBus, Record

log = logging.getLogger(__name__)

BATCH = 100
"""Records polled at once: the most held in memory, waiting for the repository."""


class AtnaMetrics:
    """Counters of audit messages exported, passed over and retried."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "micropacs_atna_messages_total",
            "Audit records handled by the ATNA exporter, by result (sent, none, undecodable).",
            ["result"],
            registry=registry,
        )
        self.retries = Counter(
            "micropacs_atna_retries_total",
            "Sends to the Audit Record Repository that failed and were tried again.",
            registry=registry,
        )


class AtnaExporter:
    """Sends every audit record to the Audit Record Repository, committing after it."""

    def __init__(
        self,
        bus: EventBus,
        sender: SyslogSender,
        source: Source,
        metrics: AtnaMetrics,
        group: str,
        hostname: str = "",
        poll_interval: float = 0.2,
    ) -> None:
        self._bus = bus
        self._sender = sender
        self._source = source
        self._metrics = metrics
        self._group = group
        self._hostname = hostname or socket.gethostname()
        self._poll_interval = poll_interval

    async def run(self, stop: asyncio.Event) -> None:
        """Export until ``stop`` is set."""
        consumer = await self._bus.consumer(AUDIT, self._group)
        log.info("ATNA exporter started", extra={"group": self._group})
        try:
            while not stop.is_set():
                records = await consumer.poll(BATCH, self._poll_interval)
                if records and await self._send_all(records, stop):
                    await consumer.commit(records)
        finally:
            await consumer.close()
            await self._sender.close()

    async def _send_all(self, records: Sequence[Record], stop: asyncio.Event) -> bool:
        """Send the batch's messages in order; False if stopped before all were accepted."""
        for record in records:
            try:
                event = AuditRecorded.from_bytes(record.value)
            except InvalidInput:
                self._metrics.messages.labels(result="undecodable").inc()
                log.error(
                    "audit record not exportable",
                    extra={"partition": record.partition, "offset": record.offset},
                )
                continue
            body = audit_message(event, self._source)
            if body is None:
                self._metrics.messages.labels(result="none").inc()
                continue
            message = syslog_message(body, event.time, self._hostname)
            if not await self._send(message, stop):
                return False
            self._metrics.messages.labels(result="sent").inc()
        return True

    async def _send(self, message: bytes, stop: asyncio.Event) -> bool:
        delay = 0.1
        while not stop.is_set():
            try:
                await self._sender.send(message)
                return True
            except AuditRepositoryUnavailable as exc:
                self._metrics.retries.inc()
                log.warning("audit record repository unavailable", extra={"reason": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        return False


def exporter_from_settings(
    settings: Settings, bus: EventBus, registry: CollectorRegistry
) -> AtnaExporter | None:
    """The exporter ``settings.atna`` describes, or None when no repository is configured."""
    atna: AtnaSettings = settings.atna
    if not atna.host:
        return None
    tls = None
    if atna.transport == "tls":
        tls = client_tls(atna.ca_file, atna.cert_file, atna.key_file)
    sender = SyslogSender(atna.host, atna.port, atna.transport, tls, atna.timeout)
    source = Source(
        audit_source_id=atna.audit_source_id or settings.dicom.ae_title,
        enterprise_site_id=settings.site,
        address=settings.dicom.host,
    )
    return AtnaExporter(
        bus,
        sender,
        source,
        AtnaMetrics(registry),
        atna.group,
        poll_interval=settings.index.poll_interval,
    )
