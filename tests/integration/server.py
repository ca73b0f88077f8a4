"""Starting a real ``micropacs serve`` process for tests, on ports the OS picks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY = re.compile(r"ready: (?:DICOM (\S+)@([\d.]+):(\d+), )?HTTP https?://[\d.]+:(\d+)")
HL7_READY = re.compile(r"ready: .*; HL7 on port (\d+)")


@dataclass
class Server:
    """A running micropacs process."""

    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    ae_title: str = "MICROPACS"
    host: str = "127.0.0.1"
    dicom_port: int = 0
    http_port: int = 0
    hl7_port: int = 0
    """The HL7 (MLLP) port, when the process runs the worklist service."""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def micropacs_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPACS_")}
    # A free HL7 port, not 2575: servers of the tests run side by side.
    env["MICROPACS_WORKLIST__HL7_PORT"] = "0"
    env.update(extra or {})
    return env


def micropacs(
    *args: str, data_dir: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a ``micropacs`` CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "micropacs", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=micropacs_env(env),
        check=check,
        timeout=300,
    )


def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    dicom_port: int = 0,
    timeout: float = 60,
    command: tuple[str, ...] = ("serve",),
) -> Server:
    """Start ``micropacs serve`` (or ``command``, e.g. ``("run", "index")``) and wait
    until it announces its ports."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-serve-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "micropacs",
                *command,
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--dicom-port",
                str(dicom_port),
                "--http-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=micropacs_env(env),
            start_new_session=True,
        )
    server = Server(data_dir=data_dir, process=process, log_path=log_path, env=env or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = READY.search(server.log())
        if found:
            server.ae_title = found.group(1) or server.ae_title
            server.dicom_port = int(found.group(3) or 0)
            server.http_port = int(found.group(4))
            hl7 = HL7_READY.search(found.string)
            server.hl7_port = int(hl7.group(1)) if hl7 else 0
            return server
        if process.poll() is not None:
            raise RuntimeError(f"micropacs serve exited {process.returncode}:\n{server.log()}")
        time.sleep(0.05)
    server.kill()
    raise TimeoutError(f"micropacs serve did not start in {timeout}s:\n{server.log()}")


def wait_ready(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.http}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server never became ready")
