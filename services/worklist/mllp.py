"""The HL7 v2 listener: MLLP framing (HL7 v2.5.1 Appendix C, MLLP release 2), one message
at a time per connection, each durable on the EventBus before its ACK.

A block is <VT> message <FS><CR>. Per message: decode and parse it
(:mod:`~services.worklist.hl7_message`), map it to events
(:mod:`~services.worklist.hl7_dispatch`), publish them in order, and only
then answer MSA-1 AA. A message whose content is wrong answers AE, one whose
type, processing ID or version we do not take AR, and one we could not make
durable (or failed on) AR 207 (nothing acknowledged: the sender may send it
again; the consumers are idempotent, so events published before a failure do
no harm twice). Every block is answered, however malformed. Framing we
cannot trust (no start block, a message over ``hl7_max_message_bytes``, a
sender silent for ``hl7_idle_timeout`` seconds, even in the middle of a
block) closes that connection only: the listener keeps serving. Log lines
name message types, codes and fields, never values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hl7.mllp import InvalidBlockError, start_hl7_server
from prometheus_client import CollectorRegistry

from micropacs.config import WorklistSettings
from micropacs.errors import MicropacsError
from micropacs.ports import EventBus
from services.worklist.hl7_access import Hl7Access
from services.worklist.hl7_ack import ACCEPT, acknowledgement, unreadable_acknowledgement
from services.worklist.hl7_dispatch import TYPES, events_of, topic_of
from services.worklist.hl7_message import (
    ErrorCode,
    Hl7Context,
    Hl7Message,
    Hl7Reject,
    decode,
    msh_field,
    parse_text,
)
from services.worklist.metrics import Hl7Metrics

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 64 * 1024
"""A message longer than this is parsed and mapped in a worker thread."""


class MllpListener:
    """Accepts MLLP connections on ``settings.hl7_host``:``hl7_port`` until cancelled.

    ``port`` is the bound port once :meth:`serve` listens (``hl7_port`` 0 picks
    one). ``default_issuer`` is the Issuer of Patient ID of a PID-3 without
    assigning authority.
    """

    def __init__(
        self,
        settings: WorklistSettings,
        bus: EventBus,
        registry: CollectorRegistry,
        *,
        default_issuer: str = "",
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._metrics = Hl7Metrics(registry)
        self._context = Hl7Context(default_issuer, settings.stations)
        self._connections: set[asyncio.Task[None]] = set()
        self._access = Hl7Access(settings, registry)
        self.port = 0
        self.listening = asyncio.Event()

    async def serve(self) -> None:
        """Listen and answer until cancelled; then close every connection."""
        server = await start_hl7_server(
            self._connected,
            self._settings.hl7_host,
            self._settings.hl7_port,
            limit=self._settings.hl7_max_message_bytes,
        )
        self.port = int(server.sockets[0].getsockname()[1])
        self.listening.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._access.admit(writer, len(self._connections)):
            writer.close()  # before a byte is read: an unknown sender gets nothing
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, OSError):
            log.info("HL7 connection lost")
        except Exception as exc:
            # This connection only: the listener serves on. No text: it may quote values.
            log.error("HL7 connection failed: %s", type(exc).__name__)
            log.debug("HL7 connection failure", exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                block: bytes = await asyncio.wait_for(
                    reader.readblock(),  # type: ignore[attr-defined]
                    self._settings.hl7_idle_timeout,
                )
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    log.warning("HL7 connection closed in the middle of a message")
                return
            except TimeoutError:
                log.info("HL7 connection idle, closed")
                return
            except InvalidBlockError:
                log.warning("HL7 framing error: a block without start character, closed")
                return
            except ValueError:
                log.warning(
                    "HL7 message over %d bytes, connection closed",
                    self._settings.hl7_max_message_bytes,
                )
                return
            reply = await self.answer(block)
            writer.writeblock(reply)  # type: ignore[attr-defined]
            await writer.drain()

    async def answer(self, block: bytes) -> bytes:
        """The ACK of one message block (without framing), after its events are durable.

        Every block is answered (HL7 v2.5.1 2.9.2), whatever fails: a failure
        of ours is AR 207, so the connection and the listener live on.
        """
        try:
            return await self._answer(block)
        except Exception as exc:
            # No traceback at INFO: an exception's text may quote the message's values.
            log.error("HL7 message failed: %s", type(exc).__name__)
            log.debug("HL7 failure", exc_info=True)
            failure = Hl7Reject(ErrorCode.APPLICATION_INTERNAL_ERROR, "application internal error")
            self._metrics.messages.labels("unreadable", failure.ack_code).inc()
            control_id = msh_field(block, 10).decode("latin-1")
            return unreadable_acknowledgement(failure, control_id).encode("ascii", "replace")

    async def _answer(self, block: bytes) -> bytes:
        # A large message is parsed and mapped off the event loop, so other connections
        # are answered meanwhile.
        large = len(block) > OFF_LOOP_BYTES
        try:
            msg = await asyncio.to_thread(decode, block) if large else decode(block)
        except Hl7Reject as reject:
            return self._refused(block, reject)
        kind = msg.type.upper() if msg.type.upper() in TYPES else "other"
        try:
            if large:
                published = await asyncio.to_thread(events_of, msg, self._context)
            else:
                published = events_of(msg, self._context)
            for event in published:
                await self._bus.publish(topic_of(event), event.key, event.to_bytes())
        except Hl7Reject as reject:
            return self._reply(msg, kind, reject)
        except MicropacsError as exc:
            log.warning("HL7 %s not acknowledged: %s", kind, type(exc).__name__)
            failure = Hl7Reject(
                ErrorCode.APPLICATION_INTERNAL_ERROR,
                "the message could not be made durable, send it again",
            )
            return self._reply(msg, kind, failure)
        except Exception as exc:
            log.error("HL7 %s failed: %s", kind, type(exc).__name__)
            log.debug("HL7 failure", exc_info=True)
            failure = Hl7Reject(ErrorCode.APPLICATION_INTERNAL_ERROR, "application internal error")
            return self._reply(msg, kind, failure)
        return self._reply(msg, kind, None)

    def _reply(
        self, msg: Hl7Message, kind: str, reject: Hl7Reject | None, codec: str = ""
    ) -> bytes:
        ack_code = reject.ack_code if reject is not None else ACCEPT
        self._metrics.messages.labels(kind, ack_code).inc()
        if reject is not None:
            log.info(
                "HL7 %s answered %s: error %d at %s",
                kind,
                ack_code,
                int(reject.code),
                reject.location or "-",
            )
        return acknowledgement(msg, ack_code, reject).encode(codec or msg.codec, "replace")

    def _refused(self, block: bytes, reject: Hl7Reject) -> bytes:
        """Refuse a block that could not be decoded: ACK it from its MSH read as Latin-1.

        The ACK is ASCII, which every character set of table 0211 we might copy
        into its MSH-18 reads alike.
        """
        try:
            msg = Hl7Message(parse_text(block.decode("latin-1")), "", "")
            kind = msg.type.upper()
        except Hl7Reject:
            self._metrics.messages.labels("unreadable", reject.ack_code).inc()
            log.info("HL7 block without MSH answered %s: error %d", reject.ack_code, reject.code)
            control_id = msh_field(block, 10).decode("latin-1")
            return unreadable_acknowledgement(reject, control_id).encode("ascii", "replace")
        return self._reply(msg, kind if kind in TYPES else "other", reject, "ascii")
