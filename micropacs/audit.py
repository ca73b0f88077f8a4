"""The audit trail: who did what, from where, to which studies (issue 14; IHE ATNA).

Every login, API action, deletion, send, node change and DICOM association is an
:class:`~micropacs.events.AuditRecorded` event on the ``audit`` topic; the index
stores it in the catalog (:meth:`~micropacs.ports.Catalog.audit` lists it with an
:class:`AuditQuery`) and, when configured, exports it to an Audit Record Repository
as a DICOM audit message (PS3.15 A.5, :mod:`micropacs.atna`).

Recording never fails the action it records: a bus that refuses the event is
counted in ``micropacs_audit_failures_total`` and logged with the kind alone,
never with the actor's studies or patients. Audit records are kept apart from
the logs, which carry no patient data.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from prometheus_client import CollectorRegistry, Counter

from micropacs.events import AUDIT, AuditRecorded, Outcome
from micropacs.ports import AuditQuery, AuditRecord, EventBus

__all__ = ["AuditMetrics", "AuditQuery", "AuditRecord", "AuditTrail", "Outcome", "audit_metrics"]

log = logging.getLogger(__name__)


class AuditMetrics:
    """Counters of audit records published and lost, by kind (a bounded label)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.recorded = Counter(
            "micropacs_audit_recorded_total",
            "Audit records published on the audit topic, by kind.",
            ["kind"],
            registry=registry,
        )
        self.failures = Counter(
            "micropacs_audit_failures_total",
            "Audit records the event bus did not accept (lost), by kind.",
            ["kind"],
            registry=registry,
        )


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, AuditMetrics] = weakref.WeakKeyDictionary()


def audit_metrics(registry: CollectorRegistry) -> AuditMetrics:
    """The audit metrics on ``registry``, created on first use: every service of a
    process records through one set of counters."""
    metrics = _metrics.get(registry)
    if metrics is None:
        metrics = _metrics[registry] = AuditMetrics(registry)
    return metrics


class AuditTrail:
    """Publishes audit records on the ``audit`` topic of ``bus``."""

    def __init__(self, bus: EventBus | None, metrics: AuditMetrics) -> None:
        self._bus = bus
        self._metrics = metrics

    async def record(self, event: AuditRecorded) -> None:
        """Publish ``event``; never raises (but for cancellation): a failure is counted
        and logged without patient data, and the caller's action goes on."""
        kind = event.kind
        if self._bus is None:
            self._metrics.failures.labels(kind=kind).inc()
            log.error("audit record lost: no event bus", extra={"audit_kind": kind})
            return
        try:
            await self._bus.publish(AUDIT, event.key, event.to_bytes())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the audited action must not fail with it
            self._metrics.failures.labels(kind=kind).inc()
            log.error(  # no traceback: it could quote the payload
                "audit record lost",
                extra={"audit_kind": kind, "reason": type(exc).__name__},
            )
            return
        self._metrics.recorded.labels(kind=kind).inc()
