"""StoreService: the one path every received object takes (ARCHITECTURE.md, rule 1).

C-STORE, STOW-RS and ``micropacs import`` hand it a received Part 10 file,
with one call, :meth:`StoreService.store`. It validates the UIDs, puts the
bytes as received into the BlobStore, publishes ``instance.stored`` and only
then reports success. Any failure raises a :mod:`micropacs.errors` error and
nothing is acknowledged; either way no temporary file is left behind.

The event carries the SHA-256 of the bytes put in the BlobStore (Storage
Commitment checks it, PS3.4 J), taken without reading the file again: the
receiver hashed it while writing it (``Received.sha256``: C-STORE, STOW-RS), or
the store's own read of a file it copies is hashed (``micropacs import``). Only
a copy compressed at rest, or a file no receiver hashed, is read to be hashed.

An object a routing rule coerces (docs/routing.md) is rewritten before anything else
(:func:`~micropacs.routing.coercion.coerce_file`: its header written again, its pixel data
copied as bytes, the copy hashed as it is written): what is stored, hashed, described by
the event and answered for is the coerced object, and the answer says so (Warning 0xB000,
Coercion of Data Elements). With no rule that coerces, nothing of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from micropacs.checksums import HashingReader, file_sha256
from micropacs.dicom import tags
from micropacs.dicom.header_json import Header, header_of
from micropacs.dicom.transcode import AT_REST, compress_file
from micropacs.dicom.uids import require_uid
from micropacs.errors import (
    BlobStoreUnavailable,
    EventBusUnavailable,
    InvalidUid,
    MicropacsError,
    StudyMismatch,
)
from micropacs.events import INSTANCE_STORED, InstanceStored
from micropacs.ports import BlobStore, EventBus
from micropacs.routing.coercion import Coercion, coerce_file
from micropacs.routing.rules import RuleSet
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A dataset received into a local Part 10 file, and who sent it."""

    path: Path
    calling_ae: str
    called_ae: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    owned: bool = True
    """Whether the store may move ``path`` (a received temporary file) or must copy it."""
    sha256: str = ""
    """The SHA-256 of the file at ``path``, when its receiver hashed it while writing it."""
    ae_group: str = ""
    """The AE group of the registered node that sent it ("" for another sender), which
    routing rules may match."""


@dataclass(frozen=True)
class Prepared:
    """A received object checked and described, not yet stored."""

    received: Received
    """What is stored: the object as received, or its copy compressed at rest."""
    event: InstanceStored
    payload: bytes
    source: Received
    """The object as handed to the store."""
    coerced: bool = False
    """Whether a routing rule changed it: the sender is told (Warning 0xB000, PS3.4 B.2.3)."""


def object_key(group: str, study: str, series: str, instance: str) -> str:
    """Where an instance lives in the BlobStore; every part is a validated UID."""
    return f"{group}/{study}/{series}/{instance}.dcm"


class StoreService:
    """Stores received objects durably and announces them."""

    def __init__(
        self,
        blobs: BlobStore,
        bus: EventBus,
        metrics: IngestMetrics,
        *,
        site: str,
        storage_group: str,
        compression: str = "none",
        default_issuer: str = "",
        rules: RuleSet | None = None,
    ) -> None:
        self._blobs = blobs
        self._bus = bus
        self._metrics = metrics
        self._site = site
        self._group = storage_group
        self._compress_to = AT_REST.get(compression)
        self._default_issuer = default_issuer
        self._rules = rules if rules is not None and rules.coerces else None

    async def store(self, received: Received, *, study: str | None = None) -> InstanceStored:
        """Store one object; returns its event once blob and event are durable (as
        :meth:`accept`, for a caller with no use for the coercion's warning)."""
        return (await self.accept(received, study=study)).event

    async def accept(self, received: Received, *, study: str | None = None) -> Prepared:
        """Store one object; returns what was stored once blob and event are durable.

        ``study``, when given, is the StudyInstanceUID the object must belong to
        (a STOW-RS request to a study's URL, PS3.18 10.5.1); another study's object
        is refused with :class:`~micropacs.errors.StudyMismatch`. Whatever happens,
        no temporary file this call was handed (``received.owned``) or made is left.
        """
        started = time.perf_counter()
        try:
            prepared = await asyncio.to_thread(self.prepare, received, study=study)
        except BaseException:
            _discard(received)  # also when cancelled while the thread ran
            raise
        # The stored event: a copy the store made (an import) is hashed as it is written.
        return replace(prepared, event=await self.commit(prepared, started))

    def prepare(self, received: Received, *, study: str | None = None) -> Prepared:
        """The CPU half of :meth:`store`, for a caller already off the event loop (an
        association's thread), which then awaits :meth:`commit` on the loop. On
        error the received file is discarded, as :meth:`store` does."""
        try:
            return self._prepare(received, study)
        except BaseException:
            _discard(received)
            raise

    async def commit(self, prepared: Prepared, started: float) -> InstanceStored:
        """The durable half of :meth:`store`: blob, then event (``started``: a
        ``perf_counter`` reading when the object was received, for the metrics)."""
        try:
            return await self._commit(prepared, started)
        finally:
            discard(prepared)

    def _prepare(self, received: Received, study: str | None) -> Prepared:
        """Read and check the received file and build its event (CPU only, no backend)."""
        source = received
        try:
            header = header_of(received.path)
            uids = _uids(header, received)
            if study is not None and uids["study"] != study:
                raise StudyMismatch(
                    "the instance belongs to another study than the request's",
                    uids["class"],
                    uids["instance"],
                )
            if self._rules is not None:
                received, header = self._coerced(received, header, uids["class"])
            coerced = received is not source
        except MicropacsError as exc:
            self._refused(received, exc)
            raise
        syntax = header.transfer_syntax_uid
        original = ""
        if self._compress_to is not None and header.is_image:
            received, compressed = self._compressed(received)
            if compressed:
                original, syntax = syntax, str(self._compress_to)
        try:
            digest = received.sha256
            if not digest and received.owned:
                # A compressed copy, or a file no receiver hashed: nothing else reads it
                # on its way into the store (a rename), so it is read here once.
                digest = file_sha256(received.path)
            event = InstanceStored(
                sop_class_uid=uids["class"],
                sop_instance_uid=uids["instance"],
                series_instance_uid=uids["series"],
                study_instance_uid=uids["study"],
                patient_id=str(header.value(tags.PATIENT_ID) or ""),
                issuer_of_patient_id=str(header.value(tags.ISSUER_OF_PATIENT_ID) or "")
                or self._default_issuer,
                object_key=object_key(self._group, uids["study"], uids["series"], uids["instance"]),
                size=received.path.stat().st_size,
                transfer_syntax_uid=syntax,
                calling_ae=received.calling_ae,
                called_ae=received.called_ae,
                site=self._site,
                storage_group=self._group,
                received_at=datetime.now(UTC).isoformat(),
                header=header.json,
                original_transfer_syntax_uid=original,
                sha256=digest,
            )
            return Prepared(
                received=received,
                event=event,
                payload=event.to_bytes(),
                source=source,
                coerced=coerced,
            )
        except BaseException:
            _discard(received)  # the compressed copy this call made
            raise

    def _coerced(
        self, received: Received, header: Header, sop_class: str
    ) -> tuple[Received, Header]:
        """The received object with the matching rules' coercions made, and its header;
        as it came when no rule coercing matches it."""
        assert self._rules is not None
        coercions = self._rules.coercions(
            header.json, sop_class, received.calling_ae, received.called_ae, received.ae_group
        )
        if not coercions:
            return received, header
        coerced = _coerce(received, coercions)
        try:
            coerced_header = header_of(coerced.path)
        except BaseException:
            _discard(coerced)
            raise
        if received.owned:
            received.path.unlink(missing_ok=True)
        self._metrics.coerced.inc()
        return coerced, coerced_header

    def _compressed(self, received: Received) -> tuple[Received, bool]:
        """The received object compressed at rest, or as it came if it cannot be."""
        assert self._compress_to is not None
        handle, name = tempfile.mkstemp(prefix="compressed-", suffix=".dcm")
        os.close(handle)
        out = Path(name)
        try:
            done = compress_file(received.path, self._compress_to, out)
        except Exception as exc:  # noqa: BLE001 - compression is best effort; storing is not
            log.warning("compression at rest skipped", extra={"reason": str(exc)})
            done = False
        if not done:
            out.unlink(missing_ok=True)
            return received, False
        if received.owned:
            received.path.unlink(missing_ok=True)
        return replace(received, path=out, owned=True, sha256=""), True

    async def _commit(self, prepared: Prepared, started: float) -> InstanceStored:
        """Make the object durable, then publish its event: only then is it stored."""
        received, event, payload = prepared.received, prepared.event, prepared.payload
        try:
            blob_started = time.perf_counter()
            if received.owned:
                await self._blobs.put_file(event.object_key, received.path)
            else:
                digest = await self._put_copy(received.path, event)
                event = replace(event, sha256=digest)
                payload = event.to_bytes()
            self._metrics.blob_seconds.observe(time.perf_counter() - blob_started)
            # If publishing fails the object stays in the store un-announced: deleting it
            # could destroy an earlier, acknowledged copy of the same instance.
            publish_started = time.perf_counter()
            await self._bus.publish(INSTANCE_STORED, event.key, payload)
            self._metrics.publish_seconds.observe(time.perf_counter() - publish_started)
        except MicropacsError as exc:
            if isinstance(exc, BlobStoreUnavailable | EventBusUnavailable):
                backend = "object_store" if isinstance(exc, BlobStoreUnavailable) else "event_bus"
                self._metrics.backend_errors.labels(backend=backend).inc()
            self._refused(received, exc)
            raise
        self._metrics.stored.labels(status="0x0000").inc()
        self._metrics.stored_bytes.inc(event.size)
        self._metrics.store_seconds.observe(time.perf_counter() - started)
        return event

    async def _put_copy(self, path: Path, event: InstanceStored) -> str:
        """Copy a file the store may not move into the BlobStore; its SHA-256, hashed as
        the store read it (or, if the store read it otherwise, as it is on disk)."""
        with path.open("rb") as source:
            reader = HashingReader(source)
            await self._blobs.put(event.object_key, reader, event.size)  # type: ignore[arg-type]
        if reader.count == event.size:
            return reader.sha256()
        return await asyncio.to_thread(file_sha256, path)

    def _refused(self, received: Received, exc: MicropacsError) -> None:
        self._metrics.stored.labels(status=f"0x{exc.dimse:04X}").inc()
        log.warning("store refused", extra={"reason": str(exc), "calling_ae": received.calling_ae})


def discard(prepared: Prepared) -> None:
    """Remove what a prepared store still holds in temporary files (idempotent)."""
    _discard(prepared.source)
    _discard(prepared.received)


def _discard(received: Received) -> None:
    """Remove a temporary file the store was handed, unless the store moved it already."""
    if received.owned:
        received.path.unlink(missing_ok=True)


def _coerce(received: Received, coercions: list[Coercion]) -> Received:
    """A temporary copy of ``received`` with ``coercions`` made, hashed as written."""
    handle, name = tempfile.mkstemp(prefix="coerced-", suffix=".dcm")
    os.close(handle)
    out = Path(name)
    try:
        digest = coerce_file(received.path, coercions, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return replace(received, path=out, owned=True, sha256=digest)


def _uids(header: Header, received: Received) -> dict[str, str]:
    uids = {
        "class": require_uid(header.value(tags.SOP_CLASS_UID), "SOPClassUID"),
        "instance": require_uid(header.value(tags.SOP_INSTANCE_UID), "SOPInstanceUID"),
        "series": require_uid(header.value(tags.SERIES_INSTANCE_UID), "SeriesInstanceUID"),
        "study": require_uid(header.value(tags.STUDY_INSTANCE_UID), "StudyInstanceUID"),
    }
    if received.sop_instance_uid and received.sop_instance_uid != uids["instance"]:
        raise InvalidUid("SOPInstanceUID of the dataset differs from the C-STORE request's")
    if received.sop_class_uid and received.sop_class_uid != uids["class"]:
        raise InvalidUid("SOPClassUID of the dataset differs from the C-STORE request's")
    return uids
