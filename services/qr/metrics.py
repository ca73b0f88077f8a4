"""Prometheus metrics of the qr service, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class QrMetrics:
    """Query latency by level and retrieve sub-operations by status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.query_seconds = Histogram(
            "micropacs_qr_query_seconds",
            "Time to answer one query, by level.",
            ["level"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.suboperations = Counter(
            "micropacs_qr_retrieve_suboperations_total",
            "C-STORE sub-operations of C-GET and C-MOVE, by operation and status.",
            ["operation", "status"],
            registry=registry,
        )
        self.object_store_seconds = Histogram(
            "micropacs_qr_object_store_seconds",
            "Time for the object store to hand over an object (C-GET, C-MOVE, WADO): "
            "the local file, or the first chunk of the stream.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.retrieved_bytes = Counter(
            "micropacs_qr_retrieved_bytes_total",
            "Bytes of instances sent by C-GET and C-MOVE.",
            registry=registry,
        )
