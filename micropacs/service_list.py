"""The services of micropacs: the one module of the core that names them.

``micropacs serve`` runs all of them, ``micropacs run NAME`` one; the CLI's
choices, the DICOM worker processes and the metric labels derive from this
tuple. A new service is a folder under ``services/`` with a ``SERVICE``
descriptor (:class:`~micropacs.service.ServiceDescriptor`, in its ``descriptor.py``) and one
line here.
"""

from __future__ import annotations

from collections.abc import Sequence

from micropacs.service import ServiceDescriptor
from services.admin.descriptor import SERVICE as ADMIN
from services.index.descriptor import SERVICE as INDEX
from services.ingest.descriptor import SERVICE as INGEST
from services.qr.descriptor import SERVICE as QR
from services.router.descriptor import SERVICE as ROUTER
from services.worklist.descriptor import SERVICE as WORKLIST

SERVICES: tuple[ServiceDescriptor, ...] = (INGEST, INDEX, QR, WORKLIST, ADMIN, ROUTER)


def names(services: Sequence[ServiceDescriptor] = SERVICES) -> list[str]:
    """The names of ``services``, in order."""
    return [service.name for service in services]


def named(wanted: Sequence[str]) -> tuple[ServiceDescriptor, ...]:
    """The descriptors of the ``wanted`` services, in the tuple's order."""
    unknown = set(wanted) - set(names())
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; choose from {names()}")
    return tuple(service for service in SERVICES if service.name in wanted)
