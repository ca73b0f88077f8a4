"""The HL7 v2 listener over MLLP with the real SQLite event log (services/worklist/mllp.py).

Messages are sent with python-hl7's own MLLP client, framing attacks with raw
sockets; each ACK is read back (MSA, ERR) and the events are consumed from the
bus and decoded. After every refusal or closed connection the listener still
answers the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7.mllp import open_hl7_connection
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_event_bus
from micropacs.config import WorklistSettings
from micropacs.dicom import tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import first_text
from micropacs.events import (
    PATIENT,
    WORKLIST,
    PatientMerged,
    PatientUpdated,
    WorkflowEvent,
    WorklistItemPut,
    WorklistItemStatus,
    decode_workflow_event,
)
from micropacs.ports import EventBus
from services.worklist.hl7_orders import MAX_ORDER_GROUPS
from services.worklist.mllp import MllpListener
from tests.unit.hl7_samples import PID, adt, omi, orm

HOST = "127.0.0.1"
UTF8 = "UNICODE UTF-8"
IDLE = 1.0


@dataclass
class Listening:
    listener: MllpListener
    bus: EventBus
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.listener.port

    async def send(self, text: str, codec: str = "utf-8") -> Any:
        """Send one message with python-hl7's MLLP client; its parsed ACK."""
        reader, writer = await open_hl7_connection(HOST, self.port, encoding=codec)
        try:
            writer.writeblock(text.encode(codec))
            await writer.drain()
            return await asyncio.wait_for(reader.readmessage(), 10)
        finally:
            writer.close()
            await writer.wait_closed()

    async def events(self, topic: str) -> list[WorkflowEvent]:
        consumer = await self.bus.consumer(topic, "test")
        try:
            records = await consumer.poll(100, 0.2)
        finally:
            await consumer.close()
        return [decode_workflow_event(record.value) for record in records]

    def count(self, kind: str, ack_code: str) -> float:
        labels = {"type": kind, "ack_code": ack_code}
        return (
            self.registry.get_sample_value("micropacs_worklist_hl7_messages_total", labels) or 0.0
        )

    async def alive(self) -> None:
        """The listener still acknowledges a good message."""
        ack = await self.send(adt("A08", charset=UTF8))
        assert ack["MSA.F1"] == "AA"


Scenario = Callable[[Listening], Awaitable[None]]


@contextlib.asynccontextmanager
async def listening(tmp_path: Path, **settings: Any) -> AsyncIterator[Listening]:
    bus = await open_event_bus(f"sqlite://{tmp_path / 'bus.db'}")
    registry = CollectorRegistry()
    config = WorklistSettings(hl7_host=HOST, hl7_port=0, hl7_idle_timeout=IDLE, **settings)
    listener = MllpListener(config, bus, registry, default_issuer="SITE")
    task = asyncio.create_task(listener.serve())
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        yield Listening(listener, bus, registry)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()


def run(tmp_path: Path, scenario: Scenario, **settings: Any) -> None:
    async def main() -> None:
        async with listening(tmp_path, **settings) as pacs:
            await scenario(pacs)

    asyncio.run(main())


def test_every_message_type_is_acknowledged_once_its_events_are_on_the_bus(
    tmp_path: Path,
) -> None:
    async def scenario(pacs: Listening) -> None:
        messages = [
            orm("NW", charset=UTF8, msg_id="M1"),
            orm("XO", charset=UTF8, msg_id="M2"),
            omi(charset=UTF8),
            orm("CA", charset=UTF8, msg_id="M3"),
            orm("DC", charset=UTF8, msg_id="M4"),
            adt("A01", charset=UTF8),
            adt("A04", charset=UTF8),
            adt("A08", charset=UTF8),
            adt("A40", "PID|1||NEW-1^^^HOSP", extra="MRG|PAT-7^^^HOSP"),
        ]
        for text in messages:
            ack = await pacs.send(text)
            assert ack["MSA.F1"] == "AA"
            assert ack["MSA.F2"] == hl7.parse(text)["MSH.F10"]
            assert ack["MSH.F9.R1.C1"] == "ACK"
        worklist = await pacs.events(WORKLIST)
        assert [type(e).__name__ for e in worklist] == [
            "WorklistItemPut",
            "WorklistItemPut",
            "WorklistItemPut",
            "WorklistItemPut",
            "WorklistItemStatus",
            "WorklistItemStatus",
        ]
        first, *_ = worklist
        assert isinstance(first, WorklistItemPut)
        assert wl.keys_of(first.dataset).patient_name == "Novák^Jiří^^Ing."
        statuses = [(e.item_id, e.status) for e in worklist if isinstance(e, WorklistItemStatus)]
        assert statuses == [("PL-1:SPS-1", wl.CANCELED), ("PL-1:SPS-1", wl.DISCONTINUED)]
        patients = await pacs.events(PATIENT)
        assert [type(e) for e in patients] == [PatientUpdated] * 3 + [PatientMerged]
        merged = patients[-1]
        assert isinstance(merged, PatientMerged)
        assert (merged.patient_id, merged.prior_patient_id) == ("NEW-1", "PAT-7")
        assert pacs.count("ORM^O01", "AA") == 4
        assert pacs.count("ADT^A40", "AA") == 1

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("charset", "codec", "name", "dicom"),
    [
        ("8859/1", "iso8859-1", "Müller^Jürgen^^Dr.", "ISO_IR 100"),
        ("8859/2", "iso8859-2", "Dvořák^Božena", "ISO_IR 101"),
        (UTF8, "utf-8", "Řezníček^Žaneta", "ISO_IR 192"),
    ],
)
def test_character_sets_of_msh18(
    tmp_path: Path, charset: str, codec: str, name: str, dicom: str
) -> None:
    family, given, _, prefix = [*name.split("^"), "", ""][:4]
    pid = PID.replace("Novák^Jiří^^^Ing.", f"{family}^{given}^^^{prefix}")

    async def scenario(pacs: Listening) -> None:
        ack = await pacs.send(orm(pid=pid, charset=charset), codec)
        assert ack["MSA.F1"] == "AA"
        ack = await pacs.send(adt("A08", pid, charset), codec)
        assert ack["MSA.F1"] == "AA"
        [put] = await pacs.events(WORKLIST)
        [updated] = await pacs.events(PATIENT)
        assert isinstance(put, WorklistItemPut) and isinstance(updated, PatientUpdated)
        assert wl.keys_of(put.dataset).patient_name == name.rstrip("^")
        assert first_text(updated.attributes, tags.PATIENT_NAME) == name.rstrip("^")
        assert first_text(put.dataset, tags.SPECIFIC_CHARACTER_SET) == dicom

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("text", "ack_code", "code", "location"),
    [
        (orm(pid="PID|1||^^^HOSP||Doe", charset=UTF8), "AE", "101", "PID^1^3"),
        (adt("A03", charset=UTF8), "AR", "201", "MSH^1^9^^2"),
        (adt("A08", charset=UTF8).replace("ADT^A08", "ORU^R01"), "AR", "200", "MSH^1^9^^1"),
        (adt("A08", charset=UTF8).replace("|2.5.1|", "|2.2|"), "AR", "203", "MSH^1^12"),
        (adt("A08"), "AE", "102", "MSH^1^18"),
        (adt("A08", "PID|1||P1||Doe\\.spX\\", charset=UTF8), "AE", "102", "PID^1^5"),
    ],
)
def test_refused_messages_answer_ae_for_content_and_ar_for_the_unsupported(
    tmp_path: Path, text: str, ack_code: str, code: str, location: str
) -> None:
    """HL7 table 0008 and v2.5.1 2.9.2: AE for an error in the content (100-103), AR for a
    message type, event, processing ID or version not taken (200-203)."""

    async def scenario(pacs: Listening) -> None:
        ack = await pacs.send(text)
        assert ack["MSA.F1"] == ack_code
        [err] = ack.segments("ERR")
        assert str(err[2]) == location
        assert (str(err[3][0][0]), str(err[3][0][2])) == (code, "HL70357")
        assert await pacs.events(WORKLIST) == []
        await pacs.alive()

    run(tmp_path, scenario)


def test_a_message_not_made_durable_is_answered_ar_207(tmp_path: Path) -> None:
    """A failure unrelated to the content is AR (HL7 v2.5.1 2.9.2): the sender resends."""

    async def scenario(pacs: Listening) -> None:
        await pacs.bus.close()
        ack = await pacs.send(orm(charset=UTF8))
        assert ack["MSA.F1"] == "AR"
        assert str(ack.segment("ERR")[3][0][0]) == "207"
        assert pacs.count("ORM^O01", "AR") == 1

    run(tmp_path, scenario)


async def raw(port: int, data: bytes) -> bytes:
    """Send raw bytes; everything received until the listener closes the connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), IDLE * 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def frame(text: str) -> bytes:
    return b"\x0b" + text.encode() + b"\x1c\r"


def test_framing_attacks_close_the_connection_and_the_listener_serves_on(
    tmp_path: Path,
) -> None:
    good = adt("A08", charset=UTF8)

    async def scenario(pacs: Listening) -> None:
        # no start block: closed without an answer
        assert await raw(pacs.port, b"MSH|garbage\x1c\r") == b""
        await pacs.alive()
        # over the limit, without end block: closed at once, not at the idle timeout
        started = asyncio.get_running_loop().time()
        assert await raw(pacs.port, b"\x0b" + b"X" * 5000) == b""
        assert asyncio.get_running_loop().time() - started < IDLE * 0.9
        await pacs.alive()
        # garbage between frames: the first is answered, then the connection closes
        answered = await raw(pacs.port, frame(good) + b"noise" + frame(good))
        assert answered.count(b"\x0b") == 1 and b"MSA|AA" in answered
        await pacs.alive()
        # a client that stalls mid-frame is closed after the idle timeout
        started = asyncio.get_running_loop().time()
        assert await raw(pacs.port, frame(good)[:40]) == b""
        assert asyncio.get_running_loop().time() - started >= IDLE * 0.9
        await pacs.alive()
        # a well-framed block without MSH is answered AE 100 (MSA-2 empty), closed when idle
        answered = await raw(pacs.port, frame("hello"))
        assert b"MSA|AE|" in answered and b"ERR|" in answered
        updates = await pacs.events(PATIENT)
        assert len(updates) == 5  # four alive() and the frame before the noise
        assert pacs.count("unreadable", "AE") == 1

    run(tmp_path, scenario, hl7_max_message_bytes=4096)


HEAD = "MSH|^~\\&|RIS|HOSP|MICROPACS|RAD|20260102||"
MALFORMED = {
    # no MSH-12: required field missing
    f"{HEAD}ADT^A08|BAD1|P\rPID|1||P1\r": "AE",
    # MSH-9 without trigger event: not one we take
    f"{HEAD}ADT|BAD2|P|2.5.1\rPID|1||P1\r": "AR",
    # a character set switch in PID-5: a data type error
    f"{HEAD}ADT^A08|BAD3|P|2.5.1\rPID|1||P1||D\\C2842\\\r": "AE",
    # an ORC without OBR
    f"{HEAD}ORM^O01|BAD4|P|2.5.1\rPID|1||P1\rORC|NW\r": "AE",
}


def test_malformed_messages_are_acknowledged_on_one_connection_that_stays_open(
    tmp_path: Path,
) -> None:
    """HL7 v2.5.1 2.9.2: every message gets an acknowledgement, echoing its MSH-10."""

    async def scenario(pacs: Listening) -> None:
        reader, writer = await open_hl7_connection(HOST, pacs.port, encoding="utf-8")
        try:
            for text, ack_code in [*MALFORMED.items(), (adt("A08", charset=UTF8), "AA")]:
                writer.writeblock(text.encode())
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), 10)
                assert (ack["MSA.F1"], ack["MSA.F2"]) == (ack_code, text.split("|")[9])
        finally:
            writer.close()
            await writer.wait_closed()
        assert await pacs.events(WORKLIST) == []
        assert len(await pacs.events(PATIENT)) == 1

    run(tmp_path, scenario)


def test_the_ack_is_encoded_in_the_message_character_set_and_says_so(tmp_path: Path) -> None:
    pid = "PID|1||P1^^^HOSP||Dvořák^Božena||1970"  # PID-7 not a date

    async def scenario(pacs: Listening) -> None:
        ack = await pacs.send(adt("A08", pid, "8859/2"), "iso8859-2")
        assert (ack["MSA.F1"], ack["MSH.F18"]) == ("AE", "8859/2")

    run(tmp_path, scenario)


def test_a_large_order_message_is_mapped_off_the_event_loop(tmp_path: Path) -> None:
    """An ORM of many order groups (over 64 KiB) is answered; other connections meanwhile."""
    base = orm(charset=UTF8, zds="").rstrip("\r").split("\r")
    groups = [
        line.replace("PL-1", f"PL-{n}").replace("SPS-1", f"SPS-{n}")
        for n in range(MAX_ORDER_GROUPS)
        for line in base[3:5]
    ]
    pad = "NTE|1||" + "x" * 60_000
    text = "\r".join([*base[:3], *groups, pad]) + "\r"

    async def scenario(pacs: Listening) -> None:
        ack, _ = await asyncio.gather(pacs.send(text), pacs.alive())
        assert ack["MSA.F1"] == "AA"
        assert len(await pacs.events(WORKLIST)) == MAX_ORDER_GROUPS

    run(tmp_path, scenario)
