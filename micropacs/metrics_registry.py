"""The metrics registries of a process, alone or with DICOM worker processes.

With workers (``MICROPACS_DICOM__WORKERS`` > 1) every process of a service
writes its metrics to files in one directory (prometheus_client's
multiprocess mode) and ``/metrics`` of the parent sums them, so what the
workers store and answer is counted. prometheus_client chooses how metrics
keep their values when it is imported; :func:`prepare` chooses again, so it
only has to run before the first metric is made.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(data_dir: Path, workers: int) -> None:
    """Choose multiprocess metrics when ``workers`` > 1 (before any metric is made).

    Worker processes inherit the environment, so they write to the same directory.
    """
    if workers <= 1 or MULTIPROC_ENV in os.environ:
        return
    folder = data_dir.resolve() / ".metrics"
    shutil.rmtree(folder, ignore_errors=True)  # files of processes long gone
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus_client read the environment when it was imported: let it read it again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess() -> bool:
    """Whether this process writes its metrics to the shared directory."""
    return MULTIPROC_ENV in os.environ
