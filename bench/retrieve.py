"""Retrieval measured against Debian's Orthanc 1.10, same study, same run.

500 CT instances (512×512, 16-bit) stored by storescu (four associations)
into ``micropacs serve`` and into Orthanc; then, for each server, the best of
``--runs`` of each way of taking the whole study back out:

- C-GET with getscu (``-S``, study level), the files written by getscu;
- C-MOVE with movescu to a DCMTK storescp, registered with each server as
  the destination (micropacs: ``micropacs nodes add``; Orthanc: its
  "DicomModalities");
- WADO-RS of the study (multipart/related, the stored syntax) with curl.

Figures: images/s and the server's CPU per image (user + system of every
thread of the server's processes, from /proc, over the operation), and the
ratios micropacs / Orthanc. storescp, getscu and curl are the same peers for
both servers; their own CPU is not counted.

    python -m bench.retrieve [--count 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread

from bench.common import DCMTK_ENV, cpu_seconds, free_port, save, start_serve, stop, wait_port
from bench.orthanc import Orthanc
from bench.store_throughput import indexed, send
from tests import dicomdata

DESTINATION = "STORESCP"
GET_SCU, MOVE_SCU = "GETSCU", "MOVESCU"
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True)
class Server:
    """One server under test: its process, DICOM port and AE title, DICOMweb root."""

    name: str
    pid: int
    ae_title: str
    dicom_port: int
    dicomweb: str


@contextmanager
def storescp(out: Path) -> Iterator[int]:
    """A DCMTK storescp (AE STORESCP) writing into ``out``; yields its port."""
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "-aet", DESTINATION, "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        scp.terminate()
        scp.wait()


def run(command: list[str]) -> None:
    done = subprocess.run(command, env=DCMTK_ENV, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stderr.decode()[-2000:]}")


def study_keys(study: str) -> list[str]:
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]


def c_get(server: Server, study: str, out: Path) -> int:
    run(
        [
            "getscu",
            "-S",
            "-aet",
            GET_SCU,
            "-aec",
            server.ae_title,
            *study_keys(study),
            "-od",
            str(out),
            "127.0.0.1",
            str(server.dicom_port),
        ]
    )
    return len(list(out.iterdir()))


def c_move(server: Server, study: str, out: Path) -> int:
    run(
        [
            "movescu",
            "-S",
            "-aet",
            MOVE_SCU,
            "-aec",
            server.ae_title,
            "-aem",
            DESTINATION,
            *study_keys(study),
            "127.0.0.1",
            str(server.dicom_port),
        ]
    )
    return len(list(out.iterdir()))


def wado_rs(server: Server, study: str, out: Path) -> int:
    body = out / "study.multipart"
    run(
        [
            "curl",
            "-sS",
            "--fail",
            "-H",
            f"Accept: {RETRIEVE_ACCEPT}",
            "-o",
            str(body),
            f"{server.dicomweb}/studies/{study}",
        ]
    )
    # Each part carries one instance; counting its DICM preambles counts them.
    return body.read_bytes().count(b"\x00" * 128 + b"DICM")


Operation = Callable[[Server, str, Path], int]
OPERATIONS: dict[str, Operation] = {"c_get": c_get, "c_move": c_move, "wado_rs": wado_rs}


def best_of(
    server: Server, operation: Operation, study: str, out: Path, count: int, runs: int
) -> dict[str, float]:
    """The fastest of ``runs`` (images/s) and the lowest server CPU per image among them."""
    rates, cpu = [], []
    for _ in range(runs):
        for old in out.iterdir():
            old.unlink()
        before = cpu_seconds(server.pid)
        started = time.perf_counter()
        received = operation(server, study, out)
        seconds = time.perf_counter() - started
        spent = cpu_seconds(server.pid) - before
        if received != count:
            raise RuntimeError(f"{server.name}: {received} of {count} instances came back")
        rates.append(count / seconds)
        cpu.append(spent / count * 1000)
    return {"images_per_s": round(max(rates), 1), "cpu_ms_per_image": round(min(cpu), 2)}


def measure(server: Server, study: str, count: int, runs: int, moved: Path, work: Path) -> Any:
    results: dict[str, Any] = {}
    for name, operation in OPERATIONS.items():
        print(f"{server.name}: {name} …", flush=True)
        if name == "c_move":
            results[name] = best_of(server, operation, study, moved, count, runs)
            continue
        out = work / f"{server.name}-{name}"
        out.mkdir()
        try:
            results[name] = best_of(server, operation, study, out, count, runs)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return results


def micropacs(files: list[Path], study: str, runs: int, work: Path) -> Any:
    data = work / "micropacs" / "data"
    data.mkdir(parents=True)
    moved = work / "micropacs-moved"
    moved.mkdir()
    dicom_port, http_port = free_port(), free_port()
    server = start_serve(data, dicom_port, http_port)
    try:
        send(dicom_port, "MICROPACS", files, 4)
        indexed(data / "catalog.db", len(files))
        with storescp(moved) as port:
            subprocess.run(
                [
                    *(sys.executable, "-m", "micropacs", "nodes", "add"),
                    *(DESTINATION, "127.0.0.1", str(port), "--data-dir", str(data)),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            target = Server(
                "micropacs",
                server.pid,
                "MICROPACS",
                dicom_port,
                f"http://127.0.0.1:{http_port}/dicom-web",
            )
            return measure(target, study, len(files), runs, moved, work)
    finally:
        stop(server)
        shutil.rmtree(data.parent, ignore_errors=True)


def orthanc(files: list[Path], study: str, runs: int, work: Path) -> Any:
    moved = work / "orthanc-moved"
    moved.mkdir()
    with storescp(moved) as port:
        # Orthanc 1.10 lets only known modalities retrieve (DicomAlwaysAllowGet/Move off).
        peer = Orthanc(
            work / "orthanc",
            modalities={
                "storescp": (DESTINATION, "127.0.0.1", port),
                "getscu": (GET_SCU, "127.0.0.1", 104),
                "movescu": (MOVE_SCU, "127.0.0.1", 104),
            },
            env=DCMTK_ENV,  # its C-STOREs of C-GET and C-MOVE, like our peers', without Nagle
        )
        try:
            send(peer.dicom_port, "ORTHANC", files, 4)  # indexed before it answers
            target = Server("orthanc", peer.process.pid, "ORTHANC", peer.dicom_port, peer.dicomweb)
            return measure(target, study, len(files), runs, moved, work)
        finally:
            peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-retrieve-") as tmp:
        work = Path(tmp)
        print(f"generating {args.count} CT instances …", flush=True)
        files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
        study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        ours = micropacs(files, study, args.runs, work)
        theirs = orthanc(files, study, args.runs, work)
    ratios = {
        name: {
            "images_per_s": round(ours[name]["images_per_s"] / theirs[name]["images_per_s"], 3),
            "cpu_ms_per_image": round(
                ours[name]["cpu_ms_per_image"] / max(theirs[name]["cpu_ms_per_image"], 1e-6), 3
            ),
        }
        for name in OPERATIONS
    }
    save(
        "retrieve",
        {
            "instances": args.count,
            "image": "CT 512x512 16-bit, one study",
            "runs": args.runs,
            "micropacs": ours,
            "orthanc": theirs,
            "ratios (micropacs / orthanc)": ratios,
        },
    )


if __name__ == "__main__":
    main()
