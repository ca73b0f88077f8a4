"""The metrics registries of a process, alone or with DICOM worker processes.

With workers (``MICROPACS_DICOM__WORKERS`` > 1) every process of a service
writes its metrics to files in one directory (prometheus_client's
multiprocess mode) and ``/metrics`` of the parent sums them, so what the
workers store and answer is counted. The mode must be chosen before
prometheus_client is imported: :func:`prepare` runs first thing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(data_dir: Path, workers: int) -> None:
    """Choose multiprocess metrics when ``workers`` > 1 (before prometheus_client loads).

    Worker processes inherit the environment, so they write to the same directory.
    """
    if workers <= 1 or MULTIPROC_ENV in os.environ:
        return
    folder = data_dir.resolve() / ".metrics"
    shutil.rmtree(folder, ignore_errors=True)  # files of processes long gone
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def multiprocess() -> bool:
    """Whether this process writes its metrics to the shared directory."""
    return MULTIPROC_ENV in os.environ
