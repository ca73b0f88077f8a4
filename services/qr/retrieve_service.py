"""RetrieveService: which instances a C-GET, C-MOVE or WADO request names, and their bytes.

A retrieve identifier names entities by their unique keys at its level
(PS3.4 C.4.2.2.1, C.4.3.2.1): PatientID, or lists of Study, Series or SOP
Instance UIDs. WADO names them by the path of its URL (PS3.18 10.4.1). The
bytes go as stored when the receiver accepts the stored transfer syntax,
otherwise converted, by the one policy
:func:`~micropacs.dicom.transcode.choose_syntax` that C-GET and C-MOVE use too.
An object whose patient the RIS changed leaves with the patient's current
attributes (:mod:`micropacs.dicom.patient_rewrite`), from a copy; the stored
object is never changed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.uid import UID

from micropacs.dicom import frames, patient_rewrite, render
from micropacs.dicom.json_model import DicomJson, element, text_of
from micropacs.dicom.levels import UNIQUE_KEY, Level
from micropacs.dicom.tags import (
    PATIENT_ID,
    QUERY_RETRIEVE_LEVEL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from micropacs.dicom.transcode import choose_syntax, to_syntax
from micropacs.dicom.uids import require_uid
from micropacs.errors import InvalidIdentifier, NotFound, UnknownDestination, UnsupportedTransfer
from micropacs.ports import BlobStore, Catalog, InstanceLocation, Node
from micropacs.read_barrier import ReadBarrier
from services.qr.metrics import QrMetrics
from services.qr.query_service import check_uids, level_of
from services.qr.read_scope import READER, scope_of


def entity_identifier(
    study: str, series: str | None = None, instance: str | None = None
) -> DicomJson:
    """The identifier of one study, series or instance, its UIDs checked (PS3.5 9.1)."""
    identifier: DicomJson = {
        STUDY_INSTANCE_UID: element("UI", require_uid(study, "StudyInstanceUID"))
    }
    level = Level.STUDY
    if series is not None:
        identifier[SERIES_INSTANCE_UID] = element("UI", require_uid(series, "SeriesInstanceUID"))
        level = Level.SERIES
    if instance is not None:
        identifier[SOP_INSTANCE_UID] = element("UI", require_uid(instance, "SOPInstanceUID"))
        level = Level.IMAGE
    identifier[QUERY_RETRIEVE_LEVEL] = element("CS", level.value)
    return identifier


class RetrieveService:
    """Locates instances and gives their stored bytes, converted where needed."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        metrics: QrMetrics | None = None,
        barrier: ReadBarrier | None = None,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._metrics = metrics
        self._barrier = barrier

    async def locate(self, identifier: DicomJson) -> list[InstanceLocation]:
        """The instances a retrieve identifier names, in series and instance order."""
        level = level_of(identifier)
        check_uids(identifier)

        def values(tag: str) -> list[str]:
            return [value.strip() for value in text_of(identifier.get(tag), skip_blank=True)]

        unique = UNIQUE_KEY[level]
        if not values(unique):
            raise InvalidIdentifier(
                f"a {level.value} level retrieve needs ({unique[:4]},{unique[4:]})"
            )

        async def located() -> list[InstanceLocation]:
            return await self._catalog.locate(
                patient_ids=values(PATIENT_ID) if level is Level.PATIENT else (),
                study_uids=values(STUDY_INSTANCE_UID),
                series_uids=values(SERIES_INSTANCE_UID)
                if level in (Level.SERIES, Level.IMAGE)
                else (),
                sop_instance_uids=values(SOP_INSTANCE_UID) if level is Level.IMAGE else (),
            )

        if self._barrier is None:
            return await located()
        # What was stored before this retrieval, it sends.
        return await self._barrier.read(READER, scope_of(identifier), located)

    async def entity(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[InstanceLocation]:
        """The instances of one study, series or instance; NotFound when there are none."""
        found = await self.locate(entity_identifier(study, series, instance))
        if not found:
            raise NotFound("no such instances in the archive")
        return found

    async def one(self, study: str, series: str, instance: str) -> InstanceLocation:
        """The one instance with these UIDs; NotFound when it is not stored."""
        (location,) = await self.entity(study, series, instance)
        return location

    def servable(self, locations: Sequence[InstanceLocation], accepted: Collection[str]) -> None:
        """Raise UnsupportedTransfer (before a response starts) unless every instance can be
        sent in one of ``accepted``."""
        stored = sorted(
            {
                location.transfer_syntax_uid
                for location in locations
                if choose_syntax(location.transfer_syntax_uid, accepted) is None
            }
        )
        if stored:
            raise UnsupportedTransfer(
                f"stored as {stored}, which cannot be converted to {sorted(accepted)}; "
                "accept transfer-syntax=* or the Explicit VR Little Endian default"
            )

    async def instance(
        self, location: InstanceLocation, accepted: Collection[str]
    ) -> tuple[str, AsyncIterator[bytes]]:
        """``location`` as a Part 10 object in one of ``accepted``: its syntax and bytes."""
        target = choose_syntax(location.transfer_syntax_uid, accepted)
        if target is None:
            self.servable([location], accepted)
        assert target is not None
        if location.patient:
            return target, self._current(location, UID(target))
        if target == location.transfer_syntax_uid:
            return target, self.read(location)
        return target, _once(await self._converted(location, UID(target)))

    async def frames(
        self, location: InstanceLocation, numbers: Sequence[int] | None, accepted: Collection[str]
    ) -> PixelStream:
        """Frames ``numbers`` (all pixel data when None) of an image, in a syntax of
        ``accepted``: as stored if accepted, else decoded. Every check is done before
        this returns; the frames are then read from the file chunk by chunk."""
        stack = AsyncExitStack()
        try:
            path = await stack.enter_async_context(self.local_path(location))
            source = await asyncio.to_thread(frames.open_pixels, path, set(accepted))
            stack.callback(source.close)
            parts = await asyncio.to_thread(source.parts, numbers)
        except BaseException:
            await stack.aclose()
            raise
        return PixelStream(source.syntax, parts, stack)

    async def render(
        self, location: InstanceLocation, frame: int, options: render.RenderOptions
    ) -> bytes:
        """Frame ``frame`` of an image as a consumer format image (PS3.18 8.3.5.1)."""
        async with self.local_path(location) as path:
            return await asyncio.to_thread(render.render, path, frame, options)

    async def read(self, location: InstanceLocation) -> AsyncIterator[bytes]:
        """The stored bytes of ``location``, in chunks."""
        started = time.perf_counter()
        first = True
        async for chunk in self._blobs.read(location.object_key):
            if first and self._metrics is not None:
                self._metrics.object_store_seconds.observe(time.perf_counter() - started)
            first = False
            yield chunk

    @asynccontextmanager
    async def local_path(self, location: InstanceLocation) -> AsyncIterator[Path]:
        """A local file with the stored bytes of ``location``."""
        started = time.perf_counter()
        async with self._blobs.local_path(location.object_key) as path:
            if self._metrics is not None:
                self._metrics.object_store_seconds.observe(time.perf_counter() - started)
            yield path

    @asynccontextmanager
    async def current_path(self, location: InstanceLocation) -> AsyncIterator[Path]:
        """A local file with ``location`` as it is sent: the stored bytes, or a copy with
        the patient's current attributes when the RIS changed them."""
        async with self.local_path(location) as path:
            if not location.patient:
                yield path
                return
            with tempfile.TemporaryDirectory(prefix="micropacs-patient-") as folder:
                out = Path(folder) / "current.dcm"
                changed = await asyncio.to_thread(
                    patient_rewrite.rewrite, path, location.patient, out
                )
                yield out if changed else path

    async def _current(self, location: InstanceLocation, target: UID) -> AsyncIterator[bytes]:
        """The object with the patient's current attributes in ``target``, in chunks."""
        async with self.current_path(location) as path:
            if target == location.transfer_syntax_uid:
                with path.open("rb") as fp:
                    while chunk := await asyncio.to_thread(fp.read, 1 << 20):
                        yield chunk
                return
            converted = await asyncio.to_thread(to_syntax, path, target)
            buffer = DicomBytesIO()
            await asyncio.to_thread(converted.save_as, buffer, enforce_file_format=True)
        yield buffer.getvalue()

    async def destination(self, ae_title: str) -> Node:
        """The registered node a C-MOVE sends to (PS3.4 C.4.2.1.4.1)."""
        wanted = ae_title.strip()
        for node in await self._catalog.nodes():
            if node.ae_title == wanted:
                return node
        raise UnknownDestination(f"move destination {wanted!r} is not a registered node")

    async def _converted(self, location: InstanceLocation, target: UID) -> bytes:
        async with self.local_path(location) as path:
            converted = await asyncio.to_thread(to_syntax, path, target)
            buffer = DicomBytesIO()
            await asyncio.to_thread(converted.save_as, buffer, enforce_file_format=True)
        return buffer.getvalue()


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


class PixelStream:
    """Frames or pixel data on their way out of a local file: the syntax they are sent
    in, one chunk iterator per part, and :meth:`aclose`, which releases the file
    (call it once the response is sent or abandoned)."""

    def __init__(
        self, syntax: str, parts: Iterator[Iterator[bytes]], stack: AsyncExitStack
    ) -> None:
        self.syntax = syntax
        self._parts = parts
        self._stack = stack

    async def parts(self) -> AsyncIterator[AsyncIterator[bytes]]:
        """Each part's chunks, read in a worker thread as they are sent."""
        while (part := await asyncio.to_thread(next, self._parts, None)) is not None:
            yield _in_thread(part)

    async def aclose(self) -> None:
        """Close the file (and remove the local copy of a remote object)."""
        await self._stack.aclose()


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk
