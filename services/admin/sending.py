"""Running send jobs: the instances of a study (or series) from the BlobStore to a node.

A job is started as a task on the service loop and answers at once; its instances are
sent on one association from a worker thread, each instance's file opened through the
loop (the BlobStore lives there), and the job's counts move as each C-STORE answers.
"""

from __future__ import annotations

import asyncio
import logging

from micropacs.bridge import LoopBridge
from micropacs.dimse.scu import Associations
from micropacs.ports import BlobStore, Catalog, InstanceLocation, Node
from services.admin.jobs import InstanceResult, JobState, SendJob
from services.admin.metrics import AdminMetrics

log = logging.getLogger(__name__)

SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}
"""C-STORE statuses under which the instance was stored (PS3.4 B.2.3)."""


class Sender:
    """Sends the instances of a job to its node and keeps the job's progress."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        associations: Associations,
        metrics: AdminMetrics,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._associations = associations
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def instances(self, study_uid: str, series_uid: str) -> list[InstanceLocation]:
        """The instances a job of this study (or series) sends."""
        return await self._catalog.locate(
            study_uids=[study_uid], series_uids=[series_uid] if series_uid else []
        )

    def start(self, job: SendJob, node: Node, instances: list[InstanceLocation]) -> None:
        """Run ``job`` in the background on the running loop."""
        job.total = len(instances)
        self._metrics.send_jobs_started.inc()
        task = asyncio.create_task(self._run(job, node, instances), name=f"send-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: SendJob, node: Node, instances: list[InstanceLocation]) -> None:
        job.state = JobState.RUNNING
        bridge = LoopBridge(asyncio.get_running_loop())

        def open_file(loc: InstanceLocation) -> object:
            return bridge.enter(self._blobs.local_path(loc.object_key))

        def sent(loc: InstanceLocation, status: int | None, error: str) -> None:
            ok = status in SUCCESS_OR_WARNING
            job.results.append(InstanceResult(loc.sop_instance_uid, status, error))
            self._metrics.sent_instances.labels(result="sent" if ok else "failed").inc()
            if ok:
                job.sent += 1
            else:
                job.failed += 1

        try:
            await asyncio.to_thread(self._associations.store, node, instances, open_file, sent)
        except Exception as exc:  # noqa: BLE001 - the job ends failed, with the reason
            log.warning("send job failed", extra={"reason": type(exc).__name__})
            job.reason = type(exc).__name__
        if job.failed and not job.reason:
            job.reason = next((r.error for r in job.results if r.error), "failure statuses")
        job.state = JobState.COMPLETED if job.sent == job.total else JobState.FAILED
        self._metrics.send_jobs_finished.labels(outcome=job.state.value).inc()
