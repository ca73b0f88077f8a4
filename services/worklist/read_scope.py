"""What the worklist service's reads wait for at the read barrier."""

from __future__ import annotations

from collections.abc import Collection

from micropacs.events import MPPS, PATIENT, WORKLIST
from micropacs.read_barrier import Scope

READER = "worklist"
"""The worklist service's label on the read barrier's metrics."""


def items_scope(item_ids: Collection[str] | None = None) -> Scope:
    """Worklist items (those of ``item_ids``, or all): their own events, the performed steps
    that move their status and the patient changes that rewrite their demographics."""
    return {WORKLIST: item_ids, MPPS: None, PATIENT: None}


def step_scope(sop_instance_uid: str) -> Scope:
    """One performed procedure step: its own events."""
    return {MPPS: [sop_instance_uid]}
