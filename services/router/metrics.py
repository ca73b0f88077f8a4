"""Prometheus metrics of the router, on an injected registry.

Labelled by destination AE title: a known node of the registry, never patient data.
The queue gauges are read from the catalog, which every router process shares: each
process shows the same figures (take their ``max``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RouterMetrics:
    """Events routed; per destination: queue depth, dead entries, oldest waiting entry,
    instances sent, failed attempts, dead-lettered entries and whether it is failing."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "micropacs_router_events_total",
            "instance.stored events routed, by outcome (queued: some rule forwards it).",
            ["outcome"],
            registry=registry,
        )
        self.queued = Counter(
            "micropacs_router_queued_total",
            "Entries put into a destination's queue.",
            ["destination"],
            registry=registry,
        )
        self.depth = Gauge(
            "micropacs_router_queue_depth_entries",
            "Entries waiting to be sent to the destination.",
            ["destination"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.dead = Gauge(
            "micropacs_router_dead_entries",
            "Entries of the destination given up on, until an operator retries or cancels them.",
            ["destination"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.oldest = Gauge(
            "micropacs_router_oldest_waiting_seconds",
            "Age of the destination's oldest waiting entry (0 when none waits).",
            ["destination"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.sent = Counter(
            "micropacs_router_sent_total",
            "Instances the destination stored (C-STORE success or warning).",
            ["destination"],
            registry=registry,
        )
        self.failed = Counter(
            "micropacs_router_failed_total",
            "Failed attempts to send an instance to the destination.",
            ["destination"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "micropacs_router_dead_lettered_total",
            "Entries given up on: too many attempts, too old, or the object gone.",
            ["destination"],
            registry=registry,
        )
        self.failing_since = Gauge(
            "micropacs_router_failing_since_seconds",
            "When the destination's current run of failed sends began (Unix time; 0 while"
            " it takes instances).",
            ["destination"],
            registry=registry,
            multiprocess_mode="livemax",
        )
