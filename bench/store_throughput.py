"""C-STORE throughput of micropacs serve vs DCMTK storescp, same data, same run.

1,000 CT instances (512×512, 16-bit) sent by one storescu association and by
four at once (each sends a quarter). Figures are images/s and the ratio to
storescp.

    python -m bench.store_throughput [--count 1000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import DCMTK_ENV, free_port, save, start_serve, stop, wait_port
from tests import dicomdata


def send(port: int, ae: str, files: list[Path], associations: int) -> float:
    """Seconds for ``associations`` storescu processes to send ``files`` between them."""
    chunks = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aec", ae, "127.0.0.1", str(port), *map(str, chunk)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-2000:]}")
    return time.perf_counter() - started


def storescp_rate(files: list[Path], associations: int, work: Path) -> float:
    out = work / f"storescp-{associations}"
    out.mkdir()
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        seconds = send(port, "STORESCP", files, associations)
    finally:
        scp.terminate()
        scp.wait()
    shutil.rmtree(out)
    return len(files) / seconds


def micropacs_rate(
    files: list[Path], associations: int, work: Path, env: dict[str, str] | None = None
) -> float:
    data = work / f"micropacs-{associations}-{len(env or {})}" / "data"
    data.mkdir(parents=True)
    port = free_port()
    server = start_serve(data, port, free_port(), env)
    try:
        seconds = send(port, "MICROPACS", files, associations)
    finally:
        stop(server)
    shutil.rmtree(data.parent)
    return len(files) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        print(f"generating {args.count} CT instances …", flush=True)
        files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
        result: dict[str, object] = {"instances": args.count, "image": "CT 512x512 16-bit"}
        for associations in (1, 4):
            print(f"storescp, {associations} association(s) …", flush=True)
            peer = storescp_rate(files, associations, work)
            print(f"micropacs serve, {associations} association(s) …", flush=True)
            ours = micropacs_rate(files, associations, work)
            print(f"micropacs serve --workers 4, {associations} association(s) …", flush=True)
            workers = micropacs_rate(files, associations, work, {"MICROPACS_DICOM__WORKERS": "4"})
            result[f"{associations}_assoc"] = {
                "storescp_images_per_s": round(peer, 1),
                "micropacs_images_per_s": round(ours, 1),
                "ratio": round(ours / peer, 3),
                "micropacs_4_workers_images_per_s": round(workers, 1),
                "ratio_4_workers": round(workers / peer, 3),
            }
        save("store_throughput", result)


if __name__ == "__main__":
    main()
