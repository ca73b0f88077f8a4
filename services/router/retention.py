"""Retention and tiering runs: the policies applied to the storage groups (docs/lifecycle.md).

A run first finishes the moves whose grace period ended (:mod:`.retention_journal`),
then plans, policy by policy, which studies to act on (:mod:`.retention_policies`; a
study is acted on by the first policy that selects it), and, unless it is a dry run,
acts on them one study at a time:

* **move**: the journal entry is written, every object of the study's part in the group
  is copied to the target group and checked there (its size, and its SHA-256 where one
  was recorded at store time), then the catalog switches all of the study's instances
  at once (:meth:`~micropacs.ports.StorageTiers.move_instances`); the old objects stay
  for the grace period, so a retrieve that located them still reads them, and are
  removed by a later look. A failure before the switch leaves the study where it was
  (its copies are removed with the entry); the run goes on with the next study.
* **delete**: through the deletion events (:func:`micropacs.deletion.request_deletion`,
  as an operator's deletion), only when every instance of the study is older than the
  retention period; the run waits, up to ``deletion_wait``, for the index to apply it.

"Least recently used" is the least recently *received*: the catalog keeps no time of
last access (a retrieve writes nothing), so a study's newest instance's receive time
stands for its last use. Logs name no UID; the report (CLI) does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from micropacs.adapters.grouped import GroupedBlobStore, free_bytes, groups_of
from micropacs.checksums import blob_sha256
from micropacs.config import RetentionSettings
from micropacs.deletion import DeletionTarget, request_deletion
from micropacs.errors import InvalidInput, MicropacsError, NotFound
from micropacs.ports import (
    BlobStore,
    Catalog,
    EventBus,
    InstanceMove,
    StoredInstance,
    StudyInGroup,
)
from services.router import retention_journal as journal
from services.router.retention_metrics import RetentionMetrics
from services.router.retention_policies import Policies, Policy

log = logging.getLogger(__name__)

DAY = 86400.0
STALE_COPY = DAY
"""Seconds after which a move that never switched counts as one a crash interrupted."""
PAGE = 500
"""Studies read from the catalog at once while planning a policy by free space, which
stops as soon as it has enough; one by age alone reads all it may act on at once. Each
read passes over the group's instances (:meth:`~micropacs.ports.StorageTiers.studies_in_group`),
so few large pages beat many small ones."""


@dataclass(frozen=True)
class Planned:
    """One study a policy acts on: what a dry run lists."""

    policy: str
    action: str
    study_uid: str
    group: str
    to: str | None
    instances: int
    bytes: int
    last_received: str


@dataclass
class RunReport:
    """What a run did (or, dry, would do)."""

    trigger: str
    dry_run: bool
    planned: list[Planned] = field(default_factory=list)
    moved: int = 0
    deleted: int = 0
    asked: int = 0
    """Deletions asked for that the index had not applied within ``deletion_wait``."""
    failed: int = 0
    bytes_moved: int = 0
    bytes_deleted: int = 0
    cleaned: int = 0
    """Objects removed after their grace period (or left by an interrupted move)."""
    waiting: int = 0
    """Moves whose old objects still wait for their grace period."""
    seconds: float = 0.0


Progress = Callable[[Planned, str, int, int], None]
"""Told of each study acted on: the plan, its outcome (moved, deleted, asked, failed:
reason), its number and how many the run acts on."""


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def _written_after(modified: datetime | None, when: float) -> bool:
    """Whether an object written at ``modified`` may be newer than ``when`` (S3 gives whole
    seconds: the same second counts as newer)."""
    if modified is None:
        return False
    moment = datetime.fromtimestamp(when, UTC)
    if modified.microsecond == 0:
        return modified >= moment.replace(microsecond=0)
    return modified > moment


class CopyFailed(MicropacsError):
    """A copy did not arrive whole in the target group: the move is abandoned."""

    retryable = True


class Retention:
    """Applies the policies to the catalog and the storage groups."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        bus: EventBus | None,
        policies: Policies,
        settings: RetentionSettings,
        metrics: RetentionMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._catalog = catalog
        self._blobs: GroupedBlobStore = groups_of(blobs)
        self._bus = bus
        self.policies = policies
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def watched_groups(self) -> set[str]:
        """Every group a policy moves from or to (where journals may lie)."""
        found = {policy.group for policy in self.policies.policies}
        found |= {policy.to for policy in self.policies.policies if policy.to}
        return found | set(self._blobs.groups)

    async def free(self, policy: Policy) -> int | None:
        """The free bytes of the policy's group: its quota less the catalog's bytes there,
        or its folder's file system's free space; None when neither is known (S3, no
        quota)."""
        if policy.quota is not None:
            used = sum(
                usage.bytes
                for usage in await self._catalog.storage_usage()
                if usage.storage_group == policy.group
            )
            found: int | None = int(policy.quota) - used
        else:
            found = await asyncio.to_thread(free_bytes, self._blobs.store_of(policy.group))
        if found is not None:
            self._metrics.free.labels(group=policy.group).set(found)
        return found

    async def short_of_space(self, policy: Policy) -> int:
        """How many bytes the policy's group lacks to reach its target (0: none, or a
        policy by age alone), counting as free the moved bytes waiting to be removed."""
        if not policy.by_free_space or policy.free_below is None:
            return 0
        free = await self.free(policy)
        if free is None:
            return 0
        waiting = await self._waiting_bytes(policy.group)
        if free + waiting >= int(policy.free_below):
            return 0
        return policy.target_free - free - waiting

    async def _waiting_bytes(self, group: str) -> int:
        total = 0
        async for entry in journal.entries(self._blobs, [group]):
            total += entry.size
        self._metrics.pending.labels(group=group).set(total)
        return total

    async def plan(self, policies: Sequence[Policy] | None = None) -> list[Planned]:
        """What the policies (all, or those given) would act on now, in order."""
        chosen = self.policies.policies if policies is None else tuple(policies)
        now = self._clock()
        planned: list[Planned] = []
        taken: set[str] = set()
        freeing: dict[str, int] = {}  # bytes the earlier policies of the run take from a group
        for policy in chosen:
            cutoff = (
                None if policy.older_than_days is None else _iso(now - policy.older_than_days * DAY)
            )
            need = None
            if policy.by_free_space:
                need = max(0, await self.short_of_space(policy) - freeing.get(policy.group, 0))
                if need == 0:
                    continue
            gathered = 0
            count = 0
            after: tuple[str, str] | None = None
            while count < self._settings.max_studies:
                size = PAGE if need is not None else self._settings.max_studies - count
                page = await self._catalog.studies_in_group(policy.group, cutoff, after, size)
                if not page:
                    break
                after = (page[-1].last_received, page[-1].study_instance_uid)
                for study in page:
                    if study.study_instance_uid in taken:
                        continue
                    if policy.action == "delete" and not await self._all_older(study, cutoff):
                        continue
                    taken.add(study.study_instance_uid)
                    planned.append(_planned(policy, study))
                    gathered += study.bytes
                    freeing[policy.group] = freeing.get(policy.group, 0) + study.bytes
                    count += 1
                    if count >= self._settings.max_studies:
                        break
                    if need is not None and gathered >= need:
                        break
                if need is not None and gathered >= need:
                    break
        return planned

    async def _all_older(self, study: StudyInGroup, cutoff: str | None) -> bool:
        """Whether every instance of the study (in every group) was received before
        ``cutoff``: a delete removes the whole study."""
        if cutoff is None:
            return False
        stored = await self._catalog.stored_instances(study.study_instance_uid)
        return bool(stored) and all(one.received_at < cutoff for one in stored)

    async def run(
        self,
        trigger: str,
        *,
        dry_run: bool = False,
        policies: Sequence[Policy] | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """One run (see the module's docstring); one at a time per process."""
        async with self._lock:
            return await self._run(trigger, dry_run, policies, progress)

    async def _run(
        self,
        trigger: str,
        dry_run: bool,
        policies: Sequence[Policy] | None,
        progress: Progress | None,
    ) -> RunReport:
        started = time.monotonic()
        report = RunReport(trigger=trigger, dry_run=dry_run)
        try:
            if not dry_run:
                report.cleaned, report.waiting = await self._clean()
            report.planned = await self.plan(policies)
            if not dry_run:
                for number, planned in enumerate(report.planned, 1):
                    outcome = await self._act(planned, report)
                    if progress is not None:
                        progress(planned, outcome, number, len(report.planned))
                cleaned, report.waiting = await self._clean()
                report.cleaned += cleaned
                for policy in self.policies.policies:
                    if policy.by_free_space:
                        await self.free(policy)  # the gauge, as the run left the group
        except MicropacsError:
            self._metrics.runs.labels(trigger=trigger, outcome="failed").inc()
            raise
        report.seconds = time.monotonic() - started
        if not dry_run:
            self._metrics.runs.labels(trigger=trigger, outcome="ok").inc()
            self._metrics.duration.labels(trigger=trigger).observe(report.seconds)
            self._metrics.last_run.set(self._clock())
            log.info(
                "retention run finished",
                extra={
                    "trigger": trigger,
                    "moved": report.moved,
                    "deleted": report.deleted,
                    "failed": report.failed,
                    "bytes_moved": report.bytes_moved,
                    "bytes_deleted": report.bytes_deleted,
                    "cleaned": report.cleaned,
                    "seconds": round(report.seconds, 3),
                },
            )
        return report

    async def _act(self, planned: Planned, report: RunReport) -> str:
        action = planned.action
        try:
            if action == "move":
                moved = await self.move(planned)
                outcome = "moved" if moved else "unchanged"
                if moved:
                    report.moved += 1
                    report.bytes_moved += planned.bytes
            else:
                applied = await self.delete(planned)
                outcome = "deleted" if applied else "asked"
                if applied:
                    report.deleted += 1
                else:
                    report.asked += 1
                report.bytes_deleted += planned.bytes
        except MicropacsError as exc:
            report.failed += 1
            self._metrics.studies.labels(action=action, outcome="failed").inc()
            log.warning(
                "retention could not act on a study",
                extra={"action": action, "policy": planned.policy, "error": type(exc).__name__},
            )
            return f"failed: {exc}"
        label = {"moved": "done", "deleted": "done", "asked": "asked"}.get(outcome)
        if label is not None:
            self._metrics.studies.labels(action=action, outcome=label).inc()
            self._metrics.bytes.labels(action=action).inc(planned.bytes)
        return outcome

    async def move(self, planned: Planned) -> int:
        """Move the study's part in ``planned.group`` to ``planned.to``; how many instances
        the catalog switched."""
        if planned.to is None:
            raise InvalidInput("a move needs its target group")
        stored = [
            one
            for one in await self._catalog.stored_instances(planned.study_uid)
            if one.storage_group == planned.group
        ]
        if not stored:
            return 0
        pairs = [(one.object_key, _new_key(planned.to, one)) for one in stored]
        entry = journal.new_entry(
            planned.study_uid,
            planned.group,
            planned.to,
            pairs,
            sum(one.size for one in stored),
            self._clock(),
        )
        await journal.write(self._blobs, entry)
        try:
            await self._copy_all(stored, dict(pairs))
        except MicropacsError:
            await self._finish(entry)  # the copies made so far; the records name the old
            raise
        moves = [
            InstanceMove(
                sop_instance_uid=one.sop_instance_uid,
                from_key=one.object_key,
                received_at=one.received_at,
                object_key=new,
                storage_group=planned.to,
            )
            for one, (_, new) in zip(stored, pairs, strict=True)
        ]
        moved = await self._catalog.move_instances(planned.study_uid, moves)
        await journal.write(self._blobs, entry.switched(self._clock()))
        return moved

    async def _copy_all(self, stored: Sequence[StoredInstance], keys: dict[str, str]) -> None:
        limit = asyncio.Semaphore(self._settings.concurrency)

        async def one(instance: StoredInstance) -> None:
            async with limit:
                await self._copy(instance, keys[instance.object_key])

        outcomes = await asyncio.gather(*(one(i) for i in stored), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _copy(self, instance: StoredInstance, new_key: str) -> None:
        """Copy one object to its new key and check that it arrived whole."""
        blobs = self._blobs
        try:
            async with blobs.local_path(instance.object_key) as path:
                size = await asyncio.to_thread(lambda: path.stat().st_size)
                handle = await asyncio.to_thread(path.open, "rb")
                try:
                    await blobs.put(new_key, handle, size)
                finally:
                    await asyncio.to_thread(handle.close)
        except NotFound as exc:
            raise CopyFailed(f"an object of the study is missing: {exc}") from exc
        info = await blobs.stat(new_key)
        if info is None or info.size != size:
            raise CopyFailed("a copy does not have the size of its original")
        verify = self._settings.verify_checksums and instance.sha256
        if verify and await blob_sha256(blobs, new_key) != instance.sha256:
            raise CopyFailed("a copy's SHA-256 differs from the one recorded at store time")

    async def delete(self, planned: Planned) -> bool:
        """Ask for the study's deletion and wait (up to ``deletion_wait``) for the index to
        apply it; whether it was applied."""
        if self._bus is None:
            raise InvalidInput("a delete needs the event bus")
        try:
            await request_deletion(
                self._bus,
                self._catalog,
                DeletionTarget(planned.study_uid),
                "retention",
                f"retention policy {planned.policy}",
            )
        except NotFound:
            return True  # deleted meanwhile
        deadline = time.monotonic() + self._settings.deletion_wait
        pause = 0.1
        while True:
            if not await self._catalog.stored_instances(planned.study_uid):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 2.0)

    async def clean(self) -> tuple[int, int]:
        """Finish the moves whose grace period ended: (objects removed, moves still
        waiting)."""
        async with self._lock:
            return await self._clean()

    async def _clean(self) -> tuple[int, int]:
        now = self._clock()
        removed = waiting = 0
        waiting_bytes: dict[str, int] = {}
        async for entry in journal.entries(self._blobs, self.watched_groups):
            if entry.switched_at:
                due = entry.switched_at + self._settings.grace_period
            else:
                due = entry.written_at + max(STALE_COPY, self._settings.grace_period)
            if now < due:
                waiting += 1
                waiting_bytes[entry.from_group] = (
                    waiting_bytes.get(entry.from_group, 0) + entry.size
                )
                continue
            removed += await self._finish(entry)
        for group in self.watched_groups:
            self._metrics.pending.labels(group=group).set(waiting_bytes.get(group, 0))
        return removed, waiting

    async def _finish(self, entry: journal.MoveEntry) -> int:
        """Remove the entry's objects no record points at, then the entry."""
        referenced = {
            loc.object_key
            for loc in [
                *await self._catalog.locate(study_uids=[entry.study_uid]),
                *await self._catalog.locate_rejected(study_uids=[entry.study_uid]),
            ]
        }
        removed = 0
        for old, new in entry.keys:
            for key in (old, new):
                if key in referenced:
                    continue
                info = await self._blobs.stat(key)
                if info is None:
                    continue
                if key == old and _written_after(info.modified, entry.written_at):
                    continue  # stored again since the move began: its record follows
                await self._blobs.delete(key)
                removed += 1
        await journal.remove(self._blobs, entry)
        self._metrics.cleaned.inc(removed)
        return removed


def _new_key(group: str, instance: StoredInstance) -> str:
    """The instance's key in ``group``, made of its UIDs as ingest makes keys."""
    return (
        f"{group}/{instance.study_instance_uid}/{instance.series_instance_uid}/"
        f"{instance.sop_instance_uid}.dcm"
    )


def _planned(policy: Policy, study: StudyInGroup) -> Planned:
    return Planned(
        policy=policy.name,
        action=policy.action,
        study_uid=study.study_instance_uid,
        group=policy.group,
        to=policy.to,
        instances=study.instances,
        bytes=study.bytes,
        last_received=study.last_received,
    )
