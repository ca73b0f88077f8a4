"""Prometheus metrics of the index service, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IndexMetrics:
    """Counters of events indexed, applied and dead-lettered, batch latency and lag."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.upserts = Counter(
            "micropacs_index_upserts_total", "Instances written to the catalog.", registry=registry
        )
        self.dead_letters = Counter(
            "micropacs_index_dead_letters_total",
            "Events sent to the dead-letter topic.",
            registry=registry,
        )
        self.workflow_events = Counter(
            "micropacs_index_workflow_events_total",
            "Worklist, MPPS and patient events applied to the worklist store, by type.",
            ["type"],
            registry=registry,
        )
        self.deletions = Counter(
            "micropacs_index_deletions_total",
            "Study, series and instance deletions applied, by type.",
            ["type"],
            registry=registry,
        )
        self.deleted_instances = Counter(
            "micropacs_index_deleted_instances_total",
            "Instances removed from the catalog by deletions.",
            registry=registry,
        )
        self.deleted_objects = Counter(
            "micropacs_index_deleted_objects_total",
            "Objects removed from the BlobStore by deletions.",
            registry=registry,
        )
        self.rejection_notes = Counter(
            "micropacs_index_rejection_notes_total",
            "IOCM rejection notes stored, by outcome: applied, or malformed (ignored).",
            ["outcome"],
            registry=registry,
        )
        self.rejected_instances = Counter(
            "micropacs_index_rejected_instances_total",
            "Instances hidden by rejection notes when the note arrived (those stored after"
            " their rejection are hidden on arrival, not counted here).",
            registry=registry,
        )
        self.retries = Counter(
            "micropacs_index_retries_total",
            "Catalog and worklist writes retried after a retryable failure.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "micropacs_index_batch_seconds",
            "Time to write one batch of events to the catalog.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag = Gauge(
            "micropacs_index_consumer_lag_events",
            "Events published but not yet indexed, by topic and partition this consumer owns.",
            ["topic", "partition"],
            registry=registry,
            multiprocess_mode="livesum",
        )
