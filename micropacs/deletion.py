"""Deleting a study, a series or an instance from the archive: the one request the CLI
and the admin API make.

A deletion is an event (:class:`~micropacs.events.StudyDeleted`, ``SeriesDeleted``,
``InstanceDeleted``) on the study's topic, after the study's earlier stores; the index
applies it (:meth:`~micropacs.ports.Catalog.remove_instances`, then the objects leave
the BlobStore). :func:`request_deletion` returns once the bus has acknowledged it, so
the deletion is then certain to happen; queries through the read barrier see it done.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from micropacs.dicom.uids import require_uid
from micropacs.errors import InvalidInput, NotFound
from micropacs.events import DELETIONS, InstanceDeleted, SeriesDeleted, StudyDeleted
from micropacs.ports import Catalog, EventBus

MAX_REASON = 1024
"""The longest reason a deletion may give (characters)."""


@dataclass(frozen=True)
class DeletionTarget:
    """What to delete: a study, one series of it, or one instance of that series."""

    study_uid: str
    series_uid: str = ""
    sop_instance_uid: str = ""

    @property
    def level(self) -> str:
        """``study``, ``series`` or ``instance``."""
        if self.sop_instance_uid:
            return "instance"
        return "series" if self.series_uid else "study"


@dataclass(frozen=True)
class DeletionReceipt:
    """An acknowledged deletion: its id (the events' ``deletion_id``) and how many
    instances the catalog held under its target when it was asked."""

    deletion_id: str
    instances: int


def validated(target: DeletionTarget) -> DeletionTarget:
    """``target`` with its UIDs checked (PS3.5 9.1); InvalidUid names a bad one,
    InvalidInput an instance without its series."""
    study = require_uid(target.study_uid, "StudyInstanceUID")
    series = require_uid(target.series_uid, "SeriesInstanceUID") if target.series_uid else ""
    instance = ""
    if target.sop_instance_uid:
        if not series:
            raise InvalidInput("deleting an instance needs its SeriesInstanceUID too")
        instance = require_uid(target.sop_instance_uid, "SOPInstanceUID")
    return DeletionTarget(study, series, instance)


def object_prefixes(keys: list[str], target: DeletionTarget) -> tuple[str, ...]:
    """Where the target's objects lie: each key cut after the target's own UID
    component (keys are made of UIDs, ARCHITECTURE.md rule 3), the key itself for an
    instance."""
    if target.sop_instance_uid:
        return tuple(sorted(set(keys)))
    path = f"/{target.study_uid}/" + (f"{target.series_uid}/" if target.series_uid else "")
    found = set()
    for key in keys:
        cut = key.find(path)
        found.add(key[: cut + len(path)] if cut >= 0 else key)
    return tuple(sorted(found))


async def request_deletion(
    bus: EventBus, catalog: Catalog, target: DeletionTarget, actor: str, reason: str = ""
) -> DeletionReceipt:
    """Ask for ``target`` to be deleted, on behalf of ``actor`` (a user name, or "cli").

    Raises InvalidUid for a bad UID, InvalidInput for a bad request, NotFound when the
    catalog holds nothing under the target; returns once the bus acknowledged the event.
    """
    target = validated(target)
    if not actor.strip():
        raise InvalidInput("a deletion needs who asked for it")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"a deletion's reason is at most {MAX_REASON} characters")
    filters = {
        "study_uids": [target.study_uid],
        "series_uids": [target.series_uid] if target.series_uid else [],
        "sop_instance_uids": [target.sop_instance_uid] if target.sop_instance_uid else [],
    }
    # Rejected instances (IOCM) are hidden from locate, and deleted all the same.
    located = [*await catalog.locate(**filters), *await catalog.locate_rejected(**filters)]
    if not located:
        raise NotFound(f"the archive holds no such {target.level}")
    kind = {"study": StudyDeleted, "series": SeriesDeleted, "instance": InstanceDeleted}
    event = kind[target.level](
        deletion_id=str(uuid.uuid4()),
        study_instance_uid=target.study_uid,
        series_instance_uid=target.series_uid,
        sop_instance_uid=target.sop_instance_uid,
        actor=actor,
        reason=reason,
        requested_at=datetime.now(UTC).isoformat(),
        object_prefixes=object_prefixes([loc.object_key for loc in located], target),
    )
    await bus.publish(DELETIONS, event.key, event.to_bytes())
    return DeletionReceipt(event.deletion_id, len(located))
