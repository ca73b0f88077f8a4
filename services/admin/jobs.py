"""Send jobs: a study or series sent to a node by C-STORE, followed by its progress.

Jobs live in this process's memory only, at most ``capacity`` of them: when a new job
would pass the bound, the oldest finished job is forgotten (a job still running is never
dropped; with every kept job running, no new job starts).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """Whether the job will change no more."""
        return self in (JobState.COMPLETED, JobState.FAILED)


@dataclass
class InstanceResult:
    """How one instance's C-STORE ended."""

    sop_instance_uid: str
    status: int | None
    """The C-STORE response status (PS3.4 B.2.3); None when no response came."""
    error: str = ""


@dataclass
class SendJob:
    """A study (or one of its series) sent to a node."""

    job_id: str
    destination: str
    study_uid: str
    series_uid: str = ""
    actor: str = ""
    state: JobState = JobState.QUEUED
    total: int = 0
    sent: int = 0
    failed: int = 0
    reason: str = ""
    results: list[InstanceResult] = field(default_factory=list)


class TooManyJobs(Exception):
    """Every kept job is still running: no room for another."""


class SendJobs:
    """The send jobs of this process, newest last, at most ``capacity`` kept."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._jobs: OrderedDict[str, SendJob] = OrderedDict()

    def new(self, destination: str, study_uid: str, series_uid: str, actor: str) -> SendJob:
        """A queued job, kept; raises TooManyJobs when none can be forgotten for it."""
        while len(self._jobs) >= self._capacity:
            oldest = next((j for j in self._jobs.values() if j.state.finished), None)
            if oldest is None:
                raise TooManyJobs(f"{self._capacity} send jobs are running; try again later")
            del self._jobs[oldest.job_id]
        job = SendJob(secrets.token_hex(8), destination, study_uid, series_uid, actor)
        self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> SendJob | None:
        """The job ``job_id``, if still kept."""
        return self._jobs.get(job_id)

    def all(self) -> list[SendJob]:
        """Every kept job, newest first."""
        return list(reversed(self._jobs.values()))
