"""Procedures completed without images: MPPS COMPLETED whose series never reached the archive.

A modality reports the series it made in the PerformedSeriesSequence of its
final N-SET (PS3.4 F.7.2.2, PS3.3 C.4.15: SeriesInstanceUID in each item).
:class:`MissingImages` checks, every ``missing_images_interval`` seconds, the
performed steps COMPLETED between ``missing_images_window`` and
``missing_images_after`` seconds ago, and counts those for which the catalog
holds none of the series they name (a step naming no series is judged by the
studies of its ScheduledStepAttributesSequence; one naming neither is left
out). The count is the gauge ``micropacs_worklist_procedures_without_images``.

The work of one check is bounded by the window, and a step found with its
images is not asked about again while it stays in the window. A step newly
found without images gets one log line naming it by a hash of its SOP
Instance UID (no patient data); the catalog query by UID is where an operator
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from micropacs.config import QuerySettings, WorklistSettings
from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import DicomJson, element, first_text
from micropacs.dicom.levels import Level
from micropacs.dicom.uids import is_valid_uid
from micropacs.errors import MicropacsError
from micropacs.ports import Catalog, PerformedStep, Query, Worklist
from services.worklist.metrics import WorklistMetrics

log = logging.getLogger(__name__)


def referenced_series(step: DicomJson) -> list[str]:
    """The valid Series Instance UIDs of a performed step's PerformedSeriesSequence."""
    return _uids(step, model.PERFORMED_SERIES_SEQUENCE, tags.SERIES_INSTANCE_UID)


def referenced_studies(step: DicomJson) -> list[str]:
    """The valid Study Instance UIDs of a performed step's ScheduledStepAttributesSequence."""
    return _uids(step, model.SCHEDULED_STEP_ATTRIBUTES_SEQUENCE, tags.STUDY_INSTANCE_UID)


def _uids(dataset: DicomJson, sequence_tag: str, uid_tag: str) -> list[str]:
    sequence = dataset.get(sequence_tag)
    items = sequence.get("Value") if isinstance(sequence, dict) else None
    found: list[str] = []
    for item in items if isinstance(items, list) else []:
        uid = first_text(item, uid_tag).strip() if isinstance(item, dict) else ""
        # Validated before it goes into a query (ARCHITECTURE.md, rule 3).
        if is_valid_uid(uid) and uid not in found:
            found.append(uid)
    return found


def step_reference(sop_instance_uid: str) -> str:
    """How a log line names a performed step: a hash of its UID, never the UID itself."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:16]


def _iso(moment: datetime) -> str:
    # The format the worklist service stamps a step's change with, so strings compare in order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class MissingImages:
    """Counts the procedures completed without images; :meth:`run` is a background task."""

    def __init__(
        self,
        worklist: Worklist,
        catalog: Catalog,
        settings: WorklistSettings,
        query: QuerySettings,
        metrics: WorklistMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._worklist = worklist
        self._catalog = catalog
        self._settings = settings
        self._max_examined = query.max_examined
        self._metrics = metrics
        self._clock = clock
        self._with_images: set[str] = set()
        self._without: set[str] = set()

    async def check(self) -> int:
        """One pass: the number of procedures completed without images, also set on the gauge."""
        now = self._clock()
        settings = self._settings
        before = _iso(now - timedelta(seconds=settings.missing_images_after))
        after = _iso(now - timedelta(seconds=settings.missing_images_window))
        in_window: set[str] = set()
        without: set[str] = set()
        steps = self._worklist.steps(model.COMPLETED, updated_before=before, updated_after=after)
        async for step in steps:
            uid = step.sop_instance_uid
            in_window.add(uid)
            if uid in self._with_images:
                continue
            found = await self._has_images(step)
            if found is None:
                continue
            if found:
                self._with_images.add(uid)
            else:
                without.add(uid)
        for uid in sorted(without - self._without):
            log.warning(
                "procedure completed without images",
                extra={"mpps": step_reference(uid), "after_seconds": settings.missing_images_after},
            )
        # Steps that left the window are forgotten, so memory is bounded by the window too.
        self._with_images &= in_window
        self._without = without
        self._metrics.without_images.set(len(without))
        self._metrics.without_images_checked.set(time.time())
        return len(without)

    async def _has_images(self, step: PerformedStep) -> bool | None:
        """Whether the catalog holds any series (else study) the step names; None if it names
        neither."""
        series = referenced_series(step.dataset)
        if series:
            return await self._any(Level.SERIES, tags.SERIES_INSTANCE_UID, series)
        studies = referenced_studies(step.dataset)
        if studies:
            return await self._any(Level.STUDY, tags.STUDY_INSTANCE_UID, studies)
        return None

    async def _any(self, level: Level, key: str, uids: list[str]) -> bool:
        query = Query(level, {key: element("UI", *uids)}, limit=1, max_examined=self._max_examined)
        found = False
        # Read to the end (one answer at most) so the catalog's cursor closes here.
        async for _ in self._catalog.query(query):
            found = True
        return found

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``missing_images_interval`` seconds until ``stop``; a check that fails
        (a store unreachable) is logged and tried again at the next one."""
        while not stop.is_set():
            try:
                await self.check()
            except MicropacsError as exc:
                log.warning(
                    "check for procedures without images failed",
                    extra={"error": type(exc).__name__},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.missing_images_interval)
