"""The router's retention task: the policies run nightly, and whenever a watched group's
free space falls below a policy's threshold (docs/lifecycle.md).

Every ``check_interval`` seconds it looks at the free space of the groups whose policies
go by it, runs those policies that find their group short, and otherwise finishes the
moves whose grace period ended; at ``nightly_at`` (local time) it runs every policy.
A run that fails (a backend down) is logged and counted, and the next look tries again.
With ``scheduled`` off (every router replica but one) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from micropacs.config import RetentionSettings, Settings
from micropacs.errors import MicropacsError
from micropacs.ports import BlobStore, Catalog, EventBus
from services.router.retention import Retention
from services.router.retention_metrics import RetentionMetrics
from services.router.retention_policies import configured_policies

log = logging.getLogger(__name__)


def next_nightly(now: float, at: str) -> float | None:
    """The next time after ``now`` at local time ``at`` (HH:MM); None when ``at`` is empty."""
    if not at:
        return None
    hour, minute = (int(part) for part in at.split(":"))
    local = datetime.fromtimestamp(now, UTC).astimezone()
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() <= now:
        candidate += timedelta(days=1)
    return candidate.timestamp()


class RetentionTask:
    """Runs a :class:`~services.router.retention.Retention` on its schedule."""

    def __init__(
        self,
        retention: Retention,
        settings: RetentionSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._retention = retention
        self._settings = settings
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set."""
        if not self._settings.scheduled or not self._retention.policies.policies:
            await stop.wait()
            return
        nightly = next_nightly(self._clock(), self._settings.nightly_at)
        while not stop.is_set():
            now = self._clock()
            try:
                if nightly is not None and now >= nightly:
                    nightly = next_nightly(now, self._settings.nightly_at)
                    await self._retention.run("nightly")
                else:
                    await self.look()
            except MicropacsError as exc:
                log.warning(
                    "retention run failed; the next look tries again",
                    extra={"error": type(exc).__name__, "retryable": exc.retryable},
                )
            wait = self._settings.check_interval
            if nightly is not None:
                wait = max(0.0, min(wait, nightly - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def look(self) -> None:
        """Run the policies whose group is short of space; else finish due moves."""
        short = [
            policy
            for policy in self._retention.policies.policies
            if policy.by_free_space and await self._retention.short_of_space(policy) > 0
        ]
        if short:
            await self._retention.run("free_space", policies=short)
        else:
            await self._retention.clean()


def retention_from_settings(
    settings: Settings,
    catalog: Catalog,
    blobs: BlobStore,
    bus: EventBus,
    registry: CollectorRegistry,
) -> RetentionTask | None:
    """The task of ``MICROPACS_RETENTION__POLICIES_FILE`` (None when unset). An invalid file
    raises :class:`~micropacs.errors.InvalidSettings` here, at start."""
    if settings.retention.policies_file is None:
        return None
    retention = Retention(
        catalog,
        blobs,
        bus,
        configured_policies(settings),
        settings.retention,
        RetentionMetrics(registry),
    )
    return RetentionTask(retention, settings.retention)
