"""The worklist service as the runtime and the CLI know it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from micropacs.config import Settings
from micropacs.service import Adapters, Port, ServiceApp, ServiceDescriptor
from services.worklist.app import build
from services.worklist.commands import worklist_command
from services.worklist.mpps import MPPS_SOP_CLASS
from services.worklist.mwl import MWL_FIND


def _build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> ServiceApp:
    return build(
        settings,
        adapters.require_bus(),
        adapters.require_worklist(),
        registry,
        catalog=adapters.require_catalog(),
        barrier=adapters.require_barrier(),
    )


SERVICE = ServiceDescriptor(
    name="worklist",
    summary="Modality Worklist C-FIND and MPPS N-CREATE/N-SET over the Worklist store",
    needs=frozenset({Port.EVENT_BUS, Port.WORKLIST, Port.CATALOG}),
    build=_build,
    operations=("C-FIND", "N-CREATE", "N-SET"),
    sop_classes={
        "C-FIND": frozenset({MWL_FIND}),
        "N-CREATE": frozenset({MPPS_SOP_CLASS}),
        "N-SET": frozenset({MPPS_SOP_CLASS}),
    },
    commands=(worklist_command,),
    reads_index=True,
)
