"""What both catalogs check of the storage groups' calls (private; docs/lifecycle.md)."""

from __future__ import annotations

from collections.abc import Sequence

from micropacs.errors import InvalidInput
from micropacs.ports import InstanceMove


def check_limit(limit: int) -> None:
    """InvalidInput for a negative page size."""
    if limit < 0:
        raise InvalidInput("a limit cannot be negative")


def check_moves(study_uid: str, moves: Sequence[InstanceMove]) -> dict[str, InstanceMove]:
    """The moves by SOP Instance UID (the last of one instance wins); InvalidInput for a
    move without a key or group."""
    if not study_uid:
        raise InvalidInput("a move names its study")
    found: dict[str, InstanceMove] = {}
    for one in moves:
        if not (one.object_key and one.storage_group and one.from_key):
            raise InvalidInput("a move needs the old key, the new key and the storage group")
        found[one.sop_instance_uid] = one
    return found
