"""What both catalogs' pending notifications do alike (private): steps as stored JSON, and
the merge of a performed step into a notice's steps."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from micropacs.ports import PendingNotice, StepReferences


def new_token() -> str:
    """A fresh token of a noted notice (128 random bits as hex)."""
    return uuid.uuid4().hex


def steps_to_json(steps: Sequence[StepReferences]) -> list[dict[str, Any]]:
    """Steps as JSON-ready documents."""
    # Series as documents, not [uid, sops] pairs: FerretDB stores no nested arrays.
    return [
        {
            "uid": s.sop_instance_uid,
            "series": [{"uid": uid, "sops": list(sops)} for uid, sops in s.series],
        }
        for s in steps
    ]


def steps_of(documents: Any) -> tuple[StepReferences, ...]:
    """Steps from stored documents (a JSON text or its parsed list)."""
    if isinstance(documents, str):
        documents = json.loads(documents)
    return tuple(
        StepReferences(
            str(doc["uid"]),
            tuple(
                (str(series["uid"]), tuple(str(sop) for sop in series["sops"]))
                for series in doc["series"]
            ),
        )
        for doc in documents or ()
    )


def merged(steps: Sequence[StepReferences], step: StepReferences) -> list[StepReferences]:
    """``steps`` with ``step`` added, replacing one of the same SOP Instance UID."""
    return [s for s in steps if s.sop_instance_uid != step.sop_instance_uid] + [step]


def notice_of(
    study_uid: str,
    destination: str,
    due_at: float,
    attempts: int,
    bus_partition: int,
    bus_offset: int,
    steps: Any,
    token: str,
) -> PendingNotice:
    """The notice of a stored row or document."""
    return PendingNotice(
        study_instance_uid=study_uid,
        destination=destination,
        due_at=float(due_at),
        attempts=int(attempts),
        bus_partition=int(bus_partition),
        bus_offset=int(bus_offset),
        steps=steps_of(steps),
        token=token,
    )
