"""CPU per received CT image of recording its SHA-256 at store time (Storage Commitment).

The receive path writes each C-STORE data set to a temporary file fragment by
fragment (pynetdicom's chunked receive); :mod:`micropacs.dimse.received_digest`
hashes every fragment on its way to the file. This measures, in one process
with no server, the CPU of writing a 512 KB CT image (a 512x512 16-bit slice and
its header) in P-DATA-sized fragments to a temporary file with and without the
hashing writer, and of hashing alone; the difference is what the checksum adds
per image, against the ~22.5 ms per image the whole server spends
(ARCHITECTURE.md, "Performance facts").

    python -m bench.checksum_cost [--images 400] [--fragment 16384]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from micropacs.checksums import HashingWriter

IMAGE_BYTES = 512 * 1024 + 1600
"""A CT 512x512 16-bit slice (512 KiB of pixels) and a typical header."""


def per_image_ms(images: int, write_image: Callable[[], None], rounds: int = 3) -> float:
    """The best round's CPU time per image, in milliseconds."""
    best = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(images):
            write_image()
        best.append((time.process_time() - started) / images * 1000)
    return min(best)


def writer(fragments: list[bytes], wrap: Callable[[IO[bytes]], Any]) -> Callable[[], None]:
    """One image received into a new temporary file through ``wrap``, then removed."""

    def write_image() -> None:
        raw = tempfile.NamedTemporaryFile(delete=False, suffix=".dcm")  # noqa: SIM115
        file = wrap(raw)
        for fragment in fragments:
            file.write(fragment)
        file.close()
        Path(raw.name).unlink()

    return write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--fragment", type=int, default=16384, help="P-DATA fragment bytes")
    args = parser.parse_args()
    data = os.urandom(IMAGE_BYTES)
    fragments = [data[i : i + args.fragment] for i in range(0, len(data), args.fragment)]

    def hash_only() -> None:
        digest = hashlib.sha256()
        for fragment in fragments:
            digest.update(fragment)
        digest.hexdigest()

    plain = per_image_ms(args.images, writer(fragments, lambda f: f))
    hashed = per_image_ms(args.images, writer(fragments, HashingWriter))
    alone = per_image_ms(args.images, hash_only)
    print(f"512 KB image in {len(fragments)} fragments of {args.fragment} bytes, CPU per image:")
    print(f"  write to a temporary file     {plain:6.3f} ms")
    print(f"  write through HashingWriter   {hashed:6.3f} ms  (+{hashed - plain:.3f} ms)")
    print(f"  SHA-256 alone                 {alone:6.3f} ms")


if __name__ == "__main__":
    main()
