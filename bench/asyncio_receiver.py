"""A minimal asyncio receive path for storage associations, as a benchmark baseline.

What an event-driven Storage SCP in Python costs per image, to set beside
pynetdicom's threaded receive path (``bench.receive_path``): one coroutine
per association reads the PDUs (PS3.8 9.3), writes the data set's fragments
straight into the received file and awaits the store on the same loop; the
thread pool is met only for fsync (and, with micropacs' StoreService, for
the header). Only what storescu needs is here: negotiation with pynetdicom's
PDU codec and presentation context rules (PS3.8 9.3.2-9.3.3), P-DATA-TF
reassembly (PS3.7 E.2), C-STORE and C-ECHO (PS3.7 9.3.1, 9.3.5), A-RELEASE
and A-ABORT. None of micropacs' association policies (node access, peer
limits, user identity, TLS, metrics) is here: this is not a server to run.

    python -m bench.asyncio_receiver PORT FOLDER [--store-service]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import create_file_meta
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ_TYPE, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x01, 0x04, 0x05, 0x07
HEADER: Final = 6
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET: Final = 0x0101
IMPLEMENTATION_UID: Final = "1.2.826.0.1.3680043.10.1336.1"
IMPLEMENTATION_VERSION: Final = "MICROPACS"


@dataclass(frozen=True)
class Stored:
    """One received C-STORE data set, as a Part 10 file, and who sent it."""

    path: Path
    calling_ae: str
    called_ae: str
    sop_class_uid: str
    sop_instance_uid: str


StoreHandler = Callable[[Stored], Awaitable[int]]
"""Stores a received object and answers its C-STORE status (PS3.4 B.2.3)."""


class Aborted(Exception):
    """The association ends with an A-ABORT (or the peer's)."""


def _command(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """A command set, implicit VR little endian, with its group length (PS3.7 E.1)."""
    body = b"".join(
        struct.pack("<HHI", 0x0000, element, len(value)) + value for element, value in elements
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _parse_command(raw: bytes) -> dict[int, bytes]:
    """The elements of a command set (group 0000, implicit VR LE) by element number."""
    elements: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(raw):
        group, element, length = struct.unpack_from("<HHI", raw, offset)
        offset += 8
        if group != 0x0000 or offset + length > len(raw):
            raise Aborted("not a command set")
        elements[element] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise Aborted("truncated command set")
    return elements


def _text(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii", "replace")


def _us(value: bytes) -> int:
    return int(struct.unpack("<H", value[:2])[0]) if len(value) >= 2 else -1


def p_data(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF holding one whole command PDV (PS3.8 9.3.5)."""
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv


def store_response(
    context_id: int, message_id: int, sop_class: str, instance: str, status: int
) -> bytes:
    """A C-STORE-RSP (PS3.7 9.3.1.2) in one P-DATA-TF."""
    return p_data(
        context_id,
        _command(
            [
                (0x0002, _uid(sop_class)),
                (0x0100, struct.pack("<H", C_STORE_RSP)),
                (0x0120, struct.pack("<H", message_id)),
                (0x0800, struct.pack("<H", NO_DATA_SET)),
                (0x0900, struct.pack("<H", status)),
                (0x1000, _uid(instance)),
            ]
        ),
    )


def echo_response(context_id: int, message_id: int, sop_class: str) -> bytes:
    """A C-ECHO-RSP (PS3.7 9.3.5.2), Success, in one P-DATA-TF."""
    return p_data(
        context_id,
        _command(
            [
                (0x0002, _uid(sop_class)),
                (0x0100, struct.pack("<H", C_ECHO_RSP)),
                (0x0120, struct.pack("<H", message_id)),
                (0x0800, struct.pack("<H", NO_DATA_SET)),
                (0x0900, struct.pack("<H", 0x0000)),
            ]
        ),
    )


RELEASE_RP: Final = struct.pack(">BBIL", 0x06, 0, 4, 0)


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    """An A-ABORT (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


@dataclass
class Accepted:
    """The outcome of negotiating one A-ASSOCIATE-RQ."""

    answer: bytes
    contexts: dict[int, tuple[str, str]]
    """Accepted context ID -> (abstract syntax, transfer syntax)."""
    calling_ae: str
    called_ae: str


def negotiate(
    request: A_ASSOCIATE_RQ, supported: Sequence[PresentationContext], max_pdu: int
) -> Accepted:
    """Accept what we support of ``request``'s presentation contexts (PS3.8 9.3.3)."""
    primitive = request.to_primitive()
    accepted, _ = negotiate_as_acceptor(
        primitive.presentation_context_definition_list, list(supported)
    )
    answer = A_ASSOCIATE()
    answer.application_context_name = primitive.application_context_name
    answer.calling_ae_title = primitive.calling_ae_title
    answer.called_ae_title = primitive.called_ae_title
    answer.result = 0x00
    answer.presentation_context_definition_results_list = accepted
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    answer.user_information = [length, uid, version]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(answer)
    contexts = {
        int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in accepted
        if cx.result == 0x00 and cx.context_id is not None and cx.transfer_syntax
    }
    return Accepted(
        pdu.encode(),
        contexts,
        str(primitive.calling_ae_title).strip(),
        str(primitive.called_ae_title).strip(),
    )


def reject(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    pdu = A_ASSOCIATE_RJ()
    answer = A_ASSOCIATE()
    answer.result = result
    answer.result_source = source
    answer.diagnostic = reason
    pdu.from_primitive(answer)
    return bytes(pdu.encode())


class Receiving:
    """One C-STORE data set arriving into a Part 10 file in ``folder``."""

    def __init__(self, folder: Path, sop_class: str, instance: str, syntax: str) -> None:
        handle, name = tempfile.mkstemp(prefix="received-", suffix=".dcm", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._file.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(
            self._file,  # type: ignore[arg-type]
            create_file_meta(
                sop_class_uid=sop_class,  # type: ignore[arg-type]
                sop_instance_uid=instance,  # type: ignore[arg-type]
                transfer_syntax=syntax,  # type: ignore[arg-type]
                implementation_uid=IMPLEMENTATION_UID,  # type: ignore[arg-type]
                implementation_version=IMPLEMENTATION_VERSION,
            ),
        )

    def write(self, data: memoryview) -> None:
        self._file.write(data)

    def close(self) -> Path:
        self._file.close()
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)


class Association:
    """One accepted storage association, read PDU by PDU on the event loop."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accepted: Accepted,
        store: StoreHandler,
        folder: Path,
        *,
        max_pdu: int,
        timeout: float,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._accepted = accepted
        self._store = store
        self._folder = folder
        self._max_pdu = max_pdu
        self._timeout = timeout
        self._command = bytearray()
        self._context = 0
        self._fields: dict[int, bytes] | None = None
        self._data: Receiving | None = None

    async def run(self) -> None:
        try:
            while await self._next():
                pass
        except (Aborted, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, Aborted):
                log.warning("storage association aborted", extra={"reason": str(exc)})
                with contextlib.suppress(ConnectionError):
                    self._writer.write(abort_pdu())
        finally:
            if self._data is not None:
                self._data.discard()

    async def _next(self) -> bool:
        header = await asyncio.wait_for(self._reader.readexactly(HEADER), self._timeout)
        kind, _, length = struct.unpack(">BBI", header)
        if kind == P_DATA_TF:
            if length > self._max_pdu + HEADER:
                raise Aborted("P-DATA-TF longer than the maximum length we advertised")
            body = await asyncio.wait_for(self._reader.readexactly(length), self._timeout)
            await self._pdvs(memoryview(body))
            return True
        if length > 64 * 1024:
            raise Aborted("PDU too long")
        await asyncio.wait_for(self._reader.readexactly(length), self._timeout)
        if kind == A_RELEASE_RQ:
            self._writer.write(RELEASE_RP)
            await self._writer.drain()
            return False
        if kind == A_ABORT:
            return False
        raise Aborted(f"unexpected PDU type 0x{kind:02X}")

    async def _pdvs(self, body: memoryview) -> None:
        offset = 0
        while offset < len(body):
            if offset + 6 > len(body):
                raise Aborted("truncated PDV")
            length, context, control = struct.unpack_from(">IBB", body, offset)
            if length < 2 or offset + 4 + length > len(body):
                raise Aborted("PDV longer than its PDU")
            value = body[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if context not in self._accepted.contexts:
                raise Aborted("PDV on a presentation context that was not accepted")
            if control & 0x01:
                await self._command_fragment(context, value, last=bool(control & 0x02))
            else:
                await self._data_fragment(context, value, last=bool(control & 0x02))

    async def _command_fragment(self, context: int, value: memoryview, *, last: bool) -> None:
        if self._fields is not None:
            raise Aborted("a command set while a data set was awaited")
        self._command += value
        if len(self._command) > 64 * 1024:
            raise Aborted("command set too long")
        if not last:
            return
        fields = _parse_command(bytes(self._command))
        self._command.clear()
        self._context = context
        command = _us(fields.get(0x0100, b""))
        if command == C_ECHO_RQ:
            self._writer.write(
                echo_response(context, _us(fields.get(0x0110, b"")), _text(fields.get(0x0002, b"")))
            )
            return
        if command != C_STORE_RQ or _us(fields.get(0x0800, b"")) == NO_DATA_SET:
            raise Aborted("not a C-STORE or C-ECHO request")
        _, syntax = self._accepted.contexts[context]
        self._fields = fields
        self._data = Receiving(
            self._folder, _text(fields.get(0x0002, b"")), _text(fields.get(0x1000, b"")), syntax
        )

    async def _data_fragment(self, context: int, value: memoryview, *, last: bool) -> None:
        if self._data is None or self._fields is None or context != self._context:
            raise Aborted("a data set without its command set")
        self._data.write(value)
        if not last:
            return
        fields, data = self._fields, self._data
        self._fields = self._data = None
        sop_class, instance = _text(fields.get(0x0002, b"")), _text(fields.get(0x1000, b""))
        stored = Stored(
            data.close(), self._accepted.calling_ae, self._accepted.called_ae, sop_class, instance
        )
        try:
            status = await self._store(stored)
        finally:
            stored.path.unlink(missing_ok=True)
        self._writer.write(
            store_response(context, _us(fields.get(0x0110, b"")), sop_class, instance, status)
        )


async def read_request(reader: asyncio.StreamReader, seconds: float) -> A_ASSOCIATE_RQ:
    """The A-ASSOCIATE-RQ a connection opens with (PS3.8 9.3.2)."""
    header = await asyncio.wait_for(reader.readexactly(HEADER), seconds)
    kind, _, length = struct.unpack(">BBI", header)
    if kind != A_ASSOCIATE_RQ_TYPE or length > 64 * 1024:
        raise Aborted("not an A-ASSOCIATE-RQ")
    body = await asyncio.wait_for(reader.readexactly(length), seconds)
    request = A_ASSOCIATE_RQ()
    request.decode(header + body)
    return request


async def _serve(port: int, folder: Path, use_store_service: bool) -> None:
    from pynetdicom import AllStoragePresentationContexts
    from pynetdicom.presentation import build_context

    from micropacs.dimse.verification import VERIFICATION
    from services.ingest.dimse import preferred_syntaxes

    syntaxes = preferred_syntaxes()
    supported = [build_context(VERIFICATION, syntaxes)] + [
        build_context(str(cx.abstract_syntax), syntaxes) for cx in AllStoragePresentationContexts
    ]
    incoming = folder / ".tmp"
    incoming.mkdir(parents=True, exist_ok=True)
    store = await (_store_service(folder) if use_store_service else _durable_file(folder))

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            accepted = negotiate(await read_request(reader, 30), supported, 1 << 20)
            writer.write(accepted.answer)
            await Association(
                reader, writer, accepted, store, incoming, max_pdu=1 << 20, timeout=30
            ).run()
        except (Aborted, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _durable_file(folder: Path) -> StoreHandler:
    """Each object fsynced and renamed into ``folder``, as storescp -od does without fsync."""

    def durable(stored: Stored) -> None:
        with stored.path.open("rb") as handle:
            os.fsync(handle.fileno())
        stored.path.replace(folder / f"{stored.sop_instance_uid}.dcm")
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def store(stored: Stored) -> int:
        await asyncio.to_thread(durable, stored)
        return 0x0000

    return store


async def _store_service(folder: Path) -> StoreHandler:
    """micropacs' StoreService over the embedded stores (files, SQLite event log)."""
    from prometheus_client import CollectorRegistry

    from micropacs.adapters.files import FileBlobStore
    from micropacs.adapters.sqlite_bus import SqliteEventBus
    from micropacs.errors import MicropacsError
    from services.ingest.metrics import IngestMetrics
    from services.ingest.store_service import Received, StoreService

    bus = SqliteEventBus(folder / "events.db")
    await bus.open()
    service = StoreService(
        FileBlobStore(folder / "blobs"),
        bus,
        IngestMetrics(CollectorRegistry()),
        site="bench",
        storage_group="default",
    )

    async def store(stored: Stored) -> int:
        received = Received(
            path=stored.path,
            calling_ae=stored.calling_ae,
            called_ae=stored.called_ae,
            sop_class_uid=stored.sop_class_uid,
            sop_instance_uid=stored.sop_instance_uid,
        )
        try:
            await service.store(received)
        except MicropacsError as exc:
            return exc.dimse
        return 0x0000

    return store


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--store-service", action="store_true")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.folder, args.store_service))


if __name__ == "__main__":
    main()
