"""A study as a ZIP of its Part 10 files, streamed as it is written.

:mod:`zipfile` writes to a sink that only collects what it is given (no seek, so
each member is followed by a data descriptor, APPNOTE 4.3.9), members are ZIP64
(no 4 GiB bound) and stored, not deflated, and each chunk read from the BlobStore is
written and handed on before the next is read: the memory used is a chunk's, whatever
the size of the study.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from micropacs.ports import BlobStore, InstanceLocation

CHUNK = 1 << 20


class _Sink:
    """A write-only file: what zipfile writes, kept until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the parts wait to be taken."""

    def close(self) -> None:
        """Nothing to close."""

    def take(self) -> bytes:
        taken, self._parts = b"".join(self._parts), []
        return taken


def member_name(location: InstanceLocation) -> str:
    """Where an instance goes in the ZIP: study, series, instance (UIDs: no path tricks)."""
    return (
        f"{location.study_instance_uid}/{location.series_instance_uid}/"
        f"{location.sop_instance_uid}.dcm"
    )


async def zipped(blobs: BlobStore, instances: Sequence[InstanceLocation]) -> AsyncIterator[bytes]:
    """The ZIP of ``instances``' stored bytes, chunk by chunk."""
    sink = _Sink()
    stamp = datetime.now(UTC).timetuple()[:6]
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for location in instances:
            info = zipfile.ZipInfo(member_name(location), date_time=stamp)
            with archive.open(info, mode="w", force_zip64=True) as member:
                async for chunk in blobs.read(location.object_key, CHUNK):
                    member.write(chunk)
                    if taken := sink.take():
                        yield taken
            if taken := sink.take():
                yield taken
    yield sink.take()
