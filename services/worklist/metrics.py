"""Prometheus metrics of the worklist service, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorklistMetrics:
    """Worklist queries by final status and their latency; MPPS by outcome; procedures
    completed without images."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "micropacs_worklist_mwl_queries_total",
            "Modality Worklist C-FIND queries answered, by final status (0x0000, 0xA900 …).",
            ["status"],
            registry=registry,
        )
        self.query_seconds = Histogram(
            "micropacs_worklist_mwl_query_seconds",
            "Time to find the answers of one Modality Worklist query.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.mpps = Counter(
            "micropacs_worklist_mpps_total",
            "MPPS N-CREATE and N-SET requests, by outcome: created, in_progress (an N-SET"
            " that did not end the step), completed, discontinued, or the refusal's status.",
            ["outcome"],
            registry=registry,
        )
        self.without_images = Gauge(
            "micropacs_worklist_procedures_without_images",
            "Procedures (MPPS) completed longer ago than MICROPACS_WORKLIST__MISSING_IMAGES_AFTER"
            " whose series the catalog does not hold, at the last check.",
            registry=registry,
        )
        self.without_images_checked = Gauge(
            "micropacs_worklist_missing_images_checked_timestamp_seconds",
            "When the last check for procedures without images ended (Unix time).",
            registry=registry,
        )


class Hl7Metrics:
    """HL7 v2 messages received over MLLP, by message type and acknowledgement code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "micropacs_worklist_hl7_messages_total",
            "HL7 messages answered, by type (ORM^O01 …, other for one not taken, unreadable"
            " without MSH) and MSA-1 acknowledgement code (AA, AE, AR).",
            ["type", "ack_code"],
            registry=registry,
        )
