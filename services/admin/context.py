"""What the admin API's endpoints and the web UI's pages work with."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from micropacs.audit import AuditTrail
from micropacs.auth.local import LocalCredentials
from micropacs.config import Settings
from micropacs.dimse.scu import Associations
from micropacs.ports import BlobStore, Catalog, EventBus, Worklist
from micropacs.query import QueryService
from micropacs.read_barrier import ReadBarrier
from services.admin.jobs import SendJobs
from services.admin.metrics import AdminMetrics
from services.admin.sending import Sender
from services.admin.status import StatusReader


@dataclass(frozen=True)
class AdminContext:
    """The ports, settings and in-process state the admin service acts on."""

    settings: Settings
    catalog: Catalog
    bus: EventBus
    worklist: Worklist
    blobs: BlobStore
    credentials: LocalCredentials
    """Local users and API tokens (kept in the catalog)."""
    jobs: SendJobs
    """This process's send jobs."""
    registry: CollectorRegistry
    """The process's metrics registry (the status page reads rates from it)."""
    metrics: AdminMetrics
    """The admin's own counters: requests, send jobs, deletions."""
    query: QueryService
    """Studies, series and instances as C-FIND and QIDO-RS match them."""
    sender: Sender
    """Runs the send jobs."""
    associations: Associations
    """Opens associations to nodes (C-ECHO)."""
    audit: AuditTrail | None = None
    """Where every action is recorded (None: not recorded)."""
    barrier: ReadBarrier | None = None
    """Where reads of what the index writes wait (None: the catalog as it is)."""
    status: StatusReader = field(default_factory=StatusReader)
    """Gathers the system status for the API and the Status page alike."""
