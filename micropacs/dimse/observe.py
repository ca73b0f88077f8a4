"""Association metrics and log lines shared by every DIMSE service.

Labels stay bounded: the peer's AE title appears only when it is a node of
the registry, every other caller counts as ``other``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pynetdicom import evt

from micropacs.errors import Status
from micropacs.service import OperationOwners

log = logging.getLogger(__name__)


class AssociationMetrics:
    """Counters of associations by outcome and known peer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.associations = Counter(
            "micropacs_dimse_associations_total",
            "Associations requested by peers, by result and registered peer AE title.",
            ["result", "peer"],
            registry=registry,
        )
        self.operations = Counter(
            "micropacs_dimse_operations_total",
            "DIMSE operations answered, by service, operation and final status.",
            ["service", "operation", "status"],
            registry=registry,
        )


def handlers(
    metrics: AssociationMetrics,
    known_titles: Callable[[], Collection[str]],
    owners: OperationOwners,
) -> list[Any]:
    """Bindings that count associations (accepted, rejected, aborted) and the final
    responses of every DIMSE operation (labelled with the service in ``owners`` that
    answers it), and log the refusals."""

    def peer(event: evt.Event) -> tuple[str, str]:
        title = str(event.assoc.requestor.ae_title).strip()
        try:
            known = title in known_titles()
        except Exception:  # noqa: BLE001 - the registry being down must not break DIMSE
            known = False
        return title, title if known else "other"

    def accepted(event: evt.Event) -> None:
        metrics.associations.labels(result="accepted", peer=peer(event)[1]).inc()

    def rejected(event: evt.Event) -> None:
        title, label = peer(event)
        metrics.associations.labels(result="rejected", peer=label).inc()
        log.warning("association rejected", extra={"calling_ae": title})

    def aborted(event: evt.Event) -> None:
        metrics.associations.labels(result="aborted", peer=peer(event)[1]).inc()
        log.warning("association aborted", extra={"calling_ae": peer(event)[0]})

    def sent(event: evt.Event) -> None:
        # e.g. C_STORE_RSP; messages micropacs encodes itself say their name
        name = getattr(event.message, "message_name", type(event.message).__name__)
        if not name.endswith("_RSP"):
            return  # requests: C-STORE sub-operations of a C-GET or C-MOVE
        status = getattr(event.message.command_set, "Status", None)
        if status is None or int(status) in (Status.PENDING, Status.PENDING_WARNING):
            return
        operation = name.removesuffix("_RSP").replace("_", "-")
        sop_class = str(getattr(event.message.command_set, "AffectedSOPClassUID", "") or "")
        service = owners.owner(operation, sop_class) or "other"
        metrics.operations.labels(
            service=service, operation=operation, status=f"0x{int(status):04X}"
        ).inc()

    return [
        (evt.EVT_DIMSE_SENT, sent),
        (evt.EVT_ACCEPTED, accepted),
        (evt.EVT_REJECTED, rejected),
        (evt.EVT_ABORTED, aborted),
    ]
