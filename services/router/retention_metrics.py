"""Prometheus metrics of retention and tiering runs, on an injected registry.

Labelled by trigger, action, outcome and storage group: names from the configuration,
never a UID.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RetentionMetrics:
    """Per run: its duration and outcome; studies and bytes moved or deleted, failures;
    objects removed once their grace period ended; per group: free bytes, moved bytes
    still waiting for their grace period."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "micropacs_router_retention_runs_total",
            "Retention runs, by trigger (nightly, free_space, cli) and outcome.",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "micropacs_router_retention_run_duration_seconds",
            "How long a retention run took (dry runs left out).",
            ["trigger"],
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
            registry=registry,
        )
        self.last_run = Gauge(
            "micropacs_router_retention_last_run_timestamp_seconds",
            "When the last retention run ended (seconds since the epoch).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.studies = Counter(
            "micropacs_router_retention_studies_total",
            "Studies a retention run acted on, by action (move, delete) and outcome"
            " (done, failed; for a delete also asked: not applied within deletion_wait).",
            ["action", "outcome"],
            registry=registry,
        )
        self.bytes = Counter(
            "micropacs_router_retention_bytes_total",
            "Bytes of the studies moved or deleted, by action.",
            ["action"],
            registry=registry,
        )
        self.cleaned = Counter(
            "micropacs_router_retention_cleaned_objects_total",
            "Objects removed after a move: old ones once the grace period ended, and copies"
            " a move a crash interrupted left behind.",
            registry=registry,
        )
        self.free = Gauge(
            "micropacs_router_retention_free_bytes",
            "Free bytes of a storage group a policy watches (file system, or quota less use).",
            ["group"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.pending = Gauge(
            "micropacs_router_retention_pending_bytes",
            "Bytes of a group's moved studies whose old objects wait for the grace period.",
            ["group"],
            registry=registry,
            multiprocess_mode="livemax",
        )
