"""ATNA export against a real syslog-over-TLS receiver (RFC 5425) the test starts, with a
CA it generates: the exporter's framed messages arrive, parse as PS3.15 A.5 XML with the
standard's codes, are committed once accepted, and keep coming after the receiver drops
the connection; a receiver with a certificate of another CA gets nothing."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_event_bus
from micropacs.atna.exporter import AtnaExporter, AtnaMetrics
from micropacs.atna.messages import Source
from micropacs.atna.syslog import BOM, AuditRepositoryUnavailable, SyslogSender, client_tls
from micropacs.events import AUDIT, AuditRecorded
from micropacs.ports import EventBus

STUDY = "1.2.826.0.1.3680043.10.543.11.1"
GROUP = "atna"
DEADLINE = 20.0


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _server_cert(
    folder: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]
) -> tuple[Path, Path]:
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    return cert_path, key_path


@dataclass
class Receiver:
    """A syslog-over-TLS receiver: octet-counted frames (RFC 5425 4.3) into ``messages``."""

    context: ssl.SSLContext
    drop_after_first: bool = False
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                length = await reader.readuntil(b" ")
                message = await reader.readexactly(int(length[:-1]))
                async with self.arrived:
                    self.messages.append(message)
                    self.arrived.notify_all()
                if self.drop_after_first and self.connections == 1:
                    return  # the repository goes away: the next message needs a new connection
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
            async with self.arrived:
                self.closed += 1
                self.arrived.notify_all()

    async def wait_for(self, count: int) -> list[bytes]:
        async with asyncio.timeout(DEADLINE), self.arrived:
            await self.arrived.wait_for(lambda: len(self.messages) >= count)
        return self.messages


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class CountingSender(SyslogSender):
    """The real sender, telling the test once three sends have failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 0
        self.failed_three_times = asyncio.Event()

    async def send(self, message: bytes) -> None:
        try:
            await super().send(message)
        except AuditRepositoryUnavailable:
            self.failures += 1
            if self.failures >= 3:
                self.failed_three_times.set()
            raise


def _records() -> list[AuditRecorded]:
    return [
        AuditRecorded(
            kind="association",
            outcome=0,
            actor="CT01",
            source="127.0.0.1",
            destination="MICROPACS",
            study_uids=(STUDY,),
            patient_ids=("P-7",),
            operations={"C-STORE": 12},
        ),
        AuditRecorded(kind="login-failed", outcome=4, actor="mallory", source="127.0.0.1"),
        AuditRecorded(kind="study-deleted", outcome=0, actor="alice", study_uids=(STUDY,)),
    ]


async def _export(
    tmp_path: Path, receiver: Receiver, ca_file: Path, expect: int
) -> tuple[list[bytes], EventBus, AtnaMetrics]:
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, ssl=receiver.context)
    port = server.sockets[0].getsockname()[1]
    bus = await open_event_bus(f"sqlite://{tmp_path / 'events.db'}")
    for record in _records():
        await bus.publish(AUDIT, record.key, record.to_bytes())
    metrics = AtnaMetrics(CollectorRegistry())
    sender = CountingSender("127.0.0.1", port, "tls", client_tls(ca_file), timeout=5)
    exporter = AtnaExporter(
        bus, sender, Source("MICROPACS"), metrics, GROUP, "pacs", poll_interval=0.05
    )
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run(stop))
    try:
        if expect:
            messages = await receiver.wait_for(expect)
        else:
            async with asyncio.timeout(DEADLINE):
                await sender.failed_three_times.wait()
            messages = receiver.messages
    finally:
        stop.set()
        await task
        server.close()
        await server.wait_closed()
    return messages, bus, metrics


def _xml(message: bytes) -> ET.Element:
    header, bom, body = message.partition(b" " + BOM)
    assert bom, "no BOM before the MSG"
    assert header.startswith(b"<85>1 ")
    assert header.split(b" ")[5] == b"IHE+RFC-3881"
    return ET.fromstring(body)


def _event_codes(message: bytes) -> tuple[str, str, str]:
    event = _xml(message).find("EventIdentification")
    assert event is not None
    event_id = event.find("EventID")
    assert event_id is not None
    return (
        str(event_id.get("csd-code")),
        str(event.get("EventActionCode")),
        str(event.get("EventOutcomeIndicator")),
    )


def test_records_arrive_over_tls_as_dicom_audit_messages_and_are_committed(
    tmp_path: Path,
) -> None:
    ca = _ca(tmp_path, "test-ca")
    receiver = Receiver(_server_context(*_server_cert(tmp_path, "repository", ca)))

    async def scenario() -> None:
        messages, bus, metrics = await _export(tmp_path, receiver, ca[2], 3)
        try:
            assert [_event_codes(m) for m in messages[:3]] == [
                ("110104", "C", "0"),  # DICOM Instances Transferred, received
                ("110114", "E", "4"),  # User Authentication, failed
                ("110105", "D", "0"),  # DICOM Study Deleted
            ]
            transferred = _xml(messages[0])
            ids = [
                o.get("ParticipantObjectID")
                for o in transferred.findall("ParticipantObjectIdentification")
            ]
            assert ids == [STUDY, "P-7"]
            end = await bus.end_offsets([AUDIT])
            assert await bus.committed_offsets(GROUP, [AUDIT]) == end
            assert metrics.messages.labels(result="sent")._value.get() == 3
        finally:
            await bus.close()

    asyncio.run(scenario())


def test_the_exporter_reconnects_when_the_repository_drops_the_connection(
    tmp_path: Path,
) -> None:
    ca = _ca(tmp_path, "test-ca")
    receiver = Receiver(
        _server_context(*_server_cert(tmp_path, "repository", ca)), drop_after_first=True
    )
    first, *later = _records()

    async def scenario() -> list[bytes]:
        server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, ssl=receiver.context)
        port = server.sockets[0].getsockname()[1]
        bus = await open_event_bus(f"sqlite://{tmp_path / 'events.db'}")
        sender = SyslogSender("127.0.0.1", port, "tls", client_tls(ca[2]), timeout=5)
        metrics = AtnaMetrics(CollectorRegistry())
        exporter = AtnaExporter(
            bus, sender, Source("MICROPACS"), metrics, GROUP, "pacs", poll_interval=0.05
        )
        stop = asyncio.Event()
        task = asyncio.create_task(exporter.run(stop))
        try:
            await bus.publish(AUDIT, first.key, first.to_bytes())
            await receiver.wait_for(1)
            async with asyncio.timeout(DEADLINE), receiver.arrived:
                await receiver.arrived.wait_for(lambda: receiver.closed == 1)
            for record in later:  # after the repository went away
                await bus.publish(AUDIT, record.key, record.to_bytes())
            return await receiver.wait_for(3)
        finally:
            stop.set()
            await task
            server.close()
            await server.wait_closed()
            await bus.close()

    messages = asyncio.run(scenario())
    assert [_event_codes(m)[0] for m in messages] == ["110104", "110114", "110105"]
    assert receiver.connections == 2


def test_a_repository_with_an_untrusted_certificate_gets_nothing_and_nothing_is_committed(
    tmp_path: Path,
) -> None:
    ca = _ca(tmp_path, "test-ca")
    stranger = _ca(tmp_path, "stranger-ca")
    receiver = Receiver(_server_context(*_server_cert(tmp_path, "impostor", stranger)))

    async def scenario() -> None:
        messages, bus, metrics = await _export(tmp_path, receiver, ca[2], 0)
        try:
            assert messages == []
            assert metrics.messages.labels(result="sent")._value.get() == 0
            committed = await bus.committed_offsets(GROUP, [AUDIT])
            assert all(offset == 0 for offset in committed.values())
        finally:
            await bus.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_plain_transports_for_test_labs(tmp_path: Path, transport: str) -> None:
    async def scenario() -> list[bytes]:
        received: list[bytes] = []
        done = asyncio.Event()
        if transport == "tcp":

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                length = await reader.readuntil(b" ")
                received.append(await reader.readexactly(int(length[:-1])))
                done.set()
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:

            class Datagrams(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    received.append(data)
                    done.set()

            loop = asyncio.get_running_loop()
            udp, _ = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
            port = udp.get_extra_info("sockname")[1]
        sender = SyslogSender("127.0.0.1", port, transport)  # type: ignore[arg-type]
        await sender.send(b"<85>1 - - micropacs 1 IHE+RFC-3881 - " + BOM + b"<AuditMessage/>")
        async with asyncio.timeout(DEADLINE):
            await done.wait()
        await sender.close()
        if transport == "tcp":
            server.close()
            await server.wait_closed()
        else:
            udp.close()
        return received

    [message] = asyncio.run(scenario())
    assert message.endswith(BOM + b"<AuditMessage/>")
