"""Extra DICOM worker processes behind one port.

One Python process is bound by its GIL and by pynetdicom's per-association
threads. The parent alone listens on the DICOM port and hands each new
connection to the least busy process (:mod:`~micropacs.dimse.handoff`), as a
load balancer spreads modalities across pods; the DICOM TLS port is shared
with SO_REUSEPORT, where the kernel spreads connections by hash. Workers run
the services that answer on the DICOM port only; background tasks (the index
consumer) and the HTTP routes stay in the parent. A worker dies with its parent
(PR_SET_PDEATHSIG), so a killed server leaves no orphan holding the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from micropacs.config import Settings
from micropacs.dimse.handoff import HANDOFF_FD_ENV

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot tie the worker's life to its parent on this platform")


def spawn(
    settings: Settings,
    services: Sequence[str],
    port: int,
    tls_port: int | None = None,
    channels: Sequence[socket.socket] = (),
) -> list[subprocess.Popen[bytes]]:
    """Start ``settings.dicom.workers - 1`` processes serving the DICOM ``services``:
    each one the connections its parent hands it over its end of ``channels``
    (:mod:`~micropacs.dimse.handoff`), or, without, sharing ``port``; and sharing the
    DICOM TLS ``tls_port``, with the same certificate files."""
    if settings.dicom.workers <= 1 or not services:
        return []
    tls = settings.dicom.tls
    files = {"CERT_FILE": tls.cert_file, "KEY_FILE": tls.key_file, "CA_FILE": tls.ca_file}
    tls_env = {
        f"MICROPACS_DICOM__TLS__{name}": str(value.resolve())
        for name, value in files.items()
        if value is not None and tls_port is not None
    }
    if tls_port is not None:
        tls_env["MICROPACS_DICOM__TLS__PORT"] = str(tls_port)
    env = {
        **os.environ,
        "MICROPACS_DATA_DIR": str(settings.data_dir.resolve()),
        "MICROPACS_DICOM__HOST": settings.dicom.host,
        "MICROPACS_DICOM__PORT": str(port),
        "MICROPACS_DICOM__AE_TITLE": settings.dicom.ae_title,
        "MICROPACS_DICOM__WORKERS": "1",
        "MICROPACS_HTTP__HOST": "127.0.0.1",
        "MICROPACS_HTTP__PORT": "0",
        "MICROPACS_STORAGE__BLOB_URL": settings.blob_url,
        "MICROPACS_STORAGE__BUS_URL": settings.bus_url,
        "MICROPACS_STORAGE__CATALOG_URL": settings.catalog_url,
        **tls_env,
    }
    workers = []
    for number in range(settings.dicom.workers - 1):
        channel = channels[number] if number < len(channels) else None
        handed = {} if channel is None else {HANDOFF_FD_ENV: str(channel.fileno())}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "micropacs", "worker", *services],
                env={**env, **handed},
                preexec_fn=die_with_parent,
                pass_fds=() if channel is None else (channel.fileno(),),
            )
        )
    log.info("DICOM workers started", extra={"workers": len(workers), "port": port})
    return workers


def stop(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop workers and wait for them."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
