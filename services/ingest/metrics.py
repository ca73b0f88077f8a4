"""Prometheus metrics of the ingest service, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """Counters and histograms of stored instances."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter(
            "micropacs_ingest_instances_total",
            "Store requests answered, by DIMSE status.",
            ["status"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "micropacs_ingest_backend_errors_total",
            "Stores refused because a backend failed, by backend (object_store, event_bus).",
            ["backend"],
            registry=registry,
        )
        self.coerced = Counter(
            "micropacs_ingest_coerced_instances_total",
            "Received objects a routing rule's coerce changed before they were stored.",
            registry=registry,
        )
        self.stored_bytes = Counter(
            "micropacs_ingest_stored_bytes_total", "Bytes of objects stored.", registry=registry
        )
        self.store_seconds = Histogram(
            "micropacs_ingest_store_seconds",
            "Time from a received dataset to its durable event.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.blob_seconds = Histogram(
            "micropacs_ingest_object_store_seconds",
            "Time to make one object durable in the BlobStore.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "micropacs_ingest_publish_seconds",
            "Time to publish one instance.stored event with acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
