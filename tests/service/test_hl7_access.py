"""Who may open an MLLP connection (services/worklist/hl7_access.py): the real listener
over the real SQLite event log, senders on loopback and on this machine's own network
address, which the listener sees as not loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_event_bus
from micropacs.config import WorklistSettings
from micropacs.events import PATIENT
from micropacs.exposure import OpenPort
from micropacs.ports import EventBus
from services.worklist.mllp import MllpListener
from tests.unit.hl7_samples import adt

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
MESSAGE = VT + adt("A08", charset="UNICODE UTF-8").encode() + FS + CR


def own_address() -> str:
    """An IPv4 address of this machine other than loopback (skips the test without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("no network address besides loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127.") or address == "0.0.0.0":
        pytest.skip("no network address besides loopback")
    return address


@contextlib.asynccontextmanager
async def listening(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[MllpListener, EventBus, CollectorRegistry]]:
    bus = await open_event_bus(f"sqlite://{tmp_path / 'bus.db'}")
    registry = CollectorRegistry()
    config = WorklistSettings(hl7_port=0, hl7_idle_timeout=5.0, **settings)
    listener = MllpListener(config, bus, registry, default_issuer="SITE")
    task = asyncio.create_task(listener.serve())
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        yield listener, bus, registry
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()


async def exchange(host: str, port: int) -> bytes:
    """Send one ADT^A08 block; what comes back before the listener closes (b"" if nothing)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(MESSAGE)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = b""
        with contextlib.suppress(ConnectionError):
            while not answer.endswith(FS + CR):
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                if not chunk:
                    break
                answer += chunk
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def refused(registry: CollectorRegistry, reason: str) -> float:
    sample = registry.get_sample_value(
        "micropacs_worklist_hl7_connections_refused_total", {"reason": reason}
    )
    return sample or 0.0


async def patient_events(bus: EventBus) -> int:
    consumer = await bus.consumer(PATIENT, "test")
    try:
        return len(await consumer.poll(100, 0.2))
    finally:
        await consumer.close()


def test_a_sender_outside_the_allowed_networks_is_closed_before_a_byte_is_read(
    tmp_path: Path,
) -> None:
    address = own_address()

    async def main() -> None:
        allowed = ["198.51.100.0/24"]  # not this machine's network
        async with listening(tmp_path, hl7_host="0.0.0.0", hl7_allowed_from=allowed) as (
            listener,
            bus,
            registry,
        ):
            assert await exchange(address, listener.port) == b""
            assert refused(registry, "address") == 1
            assert await patient_events(bus) == 0
            # Loopback always may; the listener serves on.
            assert b"MSA|AA|" in await exchange("127.0.0.1", listener.port)
            assert await patient_events(bus) == 1

    asyncio.run(main())


def test_a_sender_in_an_allowed_network_is_answered(tmp_path: Path) -> None:
    address = own_address()

    async def main() -> None:
        allowed = ["198.51.100.0/24", f"{address}/32"]
        async with listening(tmp_path, hl7_host="0.0.0.0", hl7_allowed_from=allowed) as (
            listener,
            bus,
            registry,
        ):
            assert b"MSA|AA|" in await exchange(address, listener.port)
            assert refused(registry, "address") == 0
            assert await patient_events(bus) == 1

    asyncio.run(main())


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with listening(tmp_path, hl7_host="127.0.0.1", hl7_max_connections=2) as (
            listener,
            _bus,
            registry,
        ):
            held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
            try:
                await asyncio.sleep(0.2)  # both are being served
                assert await exchange("127.0.0.1", listener.port) == b""
                assert refused(registry, "limit") == 1
            finally:
                for _, writer in held:
                    writer.close()
                    await writer.wait_closed()
            for _ in range(50):  # their handlers end once they see the close
                with contextlib.suppress(AssertionError):
                    assert b"MSA|AA|" in await exchange("127.0.0.1", listener.port)
                    return
                await asyncio.sleep(0.1)
            pytest.fail("no connection accepted once the held ones were closed")

    asyncio.run(main())


async def _build(tmp_path: Path, **settings: Any) -> None:
    bus = await open_event_bus(f"sqlite://{tmp_path / 'bus.db'}")
    try:
        MllpListener(WorklistSettings(**settings), bus, CollectorRegistry())
    finally:
        await bus.close()


def test_a_listener_on_the_network_without_an_allow_list_refuses_to_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(OpenPort, match="MICROPACS_WORKLIST__HL7_ALLOWED_FROM"):
        asyncio.run(_build(tmp_path, hl7_host="0.0.0.0"))
    asyncio.run(_build(tmp_path, hl7_host="0.0.0.0", hl7_allowed_from=["0.0.0.0/0", "::/0"]))
    asyncio.run(_build(tmp_path, hl7_host="127.0.0.1"))
