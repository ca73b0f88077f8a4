"""Prometheus metrics of Storage Commitment, on an injected registry.

Labelled by outcome or failure reason (a handful of values), never by AE title or UID.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CommitmentMetrics:
    """Requests, instances committed or not, reports delivered, refused, failed or given up."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "micropacs_router_commitment_requests_total",
            "Storage Commitment N-ACTIONs, by the status answered (0x0000: accepted).",
            ["status"],
            registry=registry,
        )
        self.instances = Counter(
            "micropacs_router_commitment_instances_total",
            "Instances of the requests checked, by result: committed, or the Failure Reason.",
            ["result"],
            registry=registry,
        )
        self.reports = Counter(
            "micropacs_router_commitment_reports_total",
            "Requests' N-EVENT-REPORTs, by outcome: delivered (Success answered), refused"
            " (another status answered) or given_up (undelivered after the maximum age).",
            ["outcome"],
            registry=registry,
        )
        self.report_failures = Counter(
            "micropacs_router_commitment_report_failures_total",
            "Attempts at an N-EVENT-REPORT that reached no answer (each retried until the"
            " maximum age).",
            registry=registry,
        )
        self.pending = Gauge(
            "micropacs_router_commitment_pending",
            "Requests this process is checking or reporting now.",
            registry=registry,
        )
