"""What both catalogs' forward queues do alike (private): an entry as a stored document.

The fields an entry is found and ordered by (destination, state, times, attempts) are
columns or fields of their own; the rest, which never changes, travels as it is.
"""

from __future__ import annotations

from typing import Any

from micropacs.ports import ForwardEntry, ForwardState

FIXED = (
    "sop_class_uid",
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "object_key",
    "transfer_syntax_uid",
    "size",
    "target_syntax",
    "rule",
)
"""The fields of an entry that no queue operation changes."""


def fixed_of(entry: ForwardEntry) -> dict[str, Any]:
    """The unchanging fields of ``entry``."""
    return {name: getattr(entry, name) for name in FIXED}


def entry_of(
    entry_id: str,
    destination: str,
    state: str,
    enqueued_at: float,
    due_at: float,
    attempts: int,
    last_error: str,
    fixed: dict[str, Any],
) -> ForwardEntry:
    """The entry of a stored row or document."""
    return ForwardEntry(
        entry_id=entry_id,
        destination=destination,
        state=ForwardState(state),
        enqueued_at=float(enqueued_at),
        due_at=float(due_at),
        attempts=int(attempts),
        last_error=last_error,
        **{name: fixed[name] for name in FIXED if name in fixed},
    )
