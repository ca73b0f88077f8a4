"""CPU per received file of reading its header for the store: pydicom's path against one pass.

The old path is what StoreService did per object: ``read_header`` (pydicom's
``dcmread`` without pixel data, then ``check_complete`` over the element
structure) and ``to_json``; the new one is ``header_of``
(:mod:`micropacs.dicom.header_json`). In one process, no server, on files
written to a temporary folder (warm in the page cache): 200 CT 512x512
(explicit VR LE), the same CT series in implicit VR LE, 50 MR 256x256, and
10 multi-frame 16 x 512x512.

    python -m bench.header_cost [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import ImplicitVRLittleEndian

from micropacs.dicom.header_json import fast_header, header_of
from micropacs.dicom.json_model import to_json
from micropacs.dicom.part10 import read_header
from tests import dicomdata


def old_path(path: Path) -> Any:
    """What StoreService did before: pydicom's read and check, then to_json."""
    return to_json(read_header(path))


def per_file_ms(paths: list[Path], read: Callable[[Path], Any], rounds: int) -> float:
    """The best round's CPU time per file, in milliseconds."""
    best = []
    for _ in range(rounds):
        started = time.process_time()
        for path in paths:
            read(path)
        best.append((time.process_time() - started) / len(paths) * 1000)
    return min(best)


def sets(folder: Path) -> dict[str, list[Path]]:
    """The files each figure is measured on."""
    multiframe = []
    for number in range(1, 11):
        ds = dicomdata.multiframe_image(frames=16, instance_number=number)
        multiframe.append(dicomdata.write(ds, folder / "mf" / f"MF{number:03d}.dcm"))
    return {
        "CT 512x512 explicit VR (200)": dicomdata.make_ct_series(folder / "ct", 200),
        "CT 512x512 implicit VR (200)": dicomdata.make_ct_series(
            folder / "cti", 200, transfer_syntax=ImplicitVRLittleEndian
        ),
        "MR 256x256 (50)": dicomdata.make_study(folder / "mr", 50, "MR"),
        "multi-frame 16x512x512 (10)": multiframe,
    }


def main() -> None:
    """Print the per-file CPU time of both paths on each set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        for label, paths in sets(Path(name)).items():
            assert all(fast_header(p) is not None for p in paths), label  # no fallback measured
            old = per_file_ms(paths, old_path, args.rounds)
            new = per_file_ms(paths, header_of, args.rounds)
            sizes = statistics.mean(p.stat().st_size for p in paths) / 1024
            print(
                f"{label:32s} {sizes:8.0f} KiB  old {old:6.3f} ms  new {new:6.3f} ms"
                f"  x{old / new:4.1f}"
            )


if __name__ == "__main__":
    main()
