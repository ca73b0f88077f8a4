"""``make run-stack``: every micropacs service as its own process against the real stack.

Starts Kafka, MinIO and FerretDB if they are not running, then ingest (two
DICOM worker processes on one port), index and qr, each configured only by
``MICROPACS_`` variables, prints where each listens, and stops them on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stack import servers

SERVICES = {
    # name: (DICOM port, HTTP port, extra environment)
    "ingest": (11112, 8081, {"MICROPACS_DICOM__WORKERS": "2"}),
    "qr": (11113, 8082, {}),
    "index": (None, 8083, {}),
}


def main() -> int:
    run_dir = Path(os.environ.get("MICROPACS_STACK_RUN", servers.STACK_HOME / "run"))
    stack = servers.up(run_dir)
    data = Path(os.environ.get("MICROPACS_DATA_DIR", "data-stack")).resolve()
    processes: list[subprocess.Popen[bytes]] = []
    ports = stack.ports
    print(
        f"stack: Kafka 127.0.0.1:{ports.kafka}, MinIO 127.0.0.1:{ports.minio}, "
        f"FerretDB 127.0.0.1:{ports.ferretdb}, Prometheus http://127.0.0.1:{ports.prometheus}"
    )
    for name, (dicom_port, http_port, extra) in SERVICES.items():
        env = {
            **os.environ,
            **stack.env,
            **extra,
            "MICROPACS_DATA_DIR": str(data / name),
            "MICROPACS_HTTP__PORT": str(http_port),
        }
        if dicom_port:
            env["MICROPACS_DICOM__PORT"] = str(dicom_port)
        processes.append(
            subprocess.Popen([sys.executable, "-m", "micropacs", "run", name], env=env)
        )
        where = f"DICOM MICROPACS@127.0.0.1:{dicom_port}, " if dicom_port else ""
        print(f"{name}: {where}HTTP http://127.0.0.1:{http_port}/metrics")
    print("Ctrl-C stops the services (the stack keeps running: make stack-down stops it)")
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
