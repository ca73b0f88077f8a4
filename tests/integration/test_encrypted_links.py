"""Encrypted links to the backends, on the real stack (``pytest --backend stack``).

The stack's Kafka has a SASL_SSL listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
and an SSL listener requiring a client certificate beside its PLAINTEXT one;
FerretDB a TLS listener beside its plain one; a MinIO with ``--certs-dir`` is
started here. Certificates come from the stack's own CA (:mod:`stack.certs`);
another CA made by the test stands for an untrusted one. Each refusal must
name the setting to fix, and the broker must still serve afterwards.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.config import KafkaSettings, S3Settings
from micropacs.errors import BlobStoreUnavailable, CatalogUnavailable, EventBusUnavailable
from micropacs.ports import Record
from stack import certs, servers
from tests import dicomdata
from tests.integration.conftest import isolated_env
from tests.integration.peers import find_stored, free_port, storescu
from tests.integration.server import start_server

BOUND = 30.0
"""Seconds any refusal may take: a wrong setting must fail, never hang."""


@pytest.fixture(scope="module")
def stack(shared_stack: servers.Stack | None) -> servers.Stack:
    if shared_stack is None:
        pytest.skip("needs the real stack: pytest --backend stack")
    return shared_stack


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA the stack's servers have no certificate from."""
    return certs.make_pki(tmp_path_factory.mktemp("other-pki"), "untrusted").ca


def sasl(stack: servers.Stack, **overrides: object) -> KafkaSettings:
    settings = {
        "partitions": 1,
        "topic_prefix": f"t{uuid.uuid4().hex[:12]}.",
        "security_protocol": "SASL_SSL",
        "ca_file": stack.pki.ca,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": servers.KAFKA_USER,
        "sasl_password": servers.KAFKA_PASSWORD,
    }
    return KafkaSettings.model_validate({**settings, **overrides})


def sasl_url(stack: servers.Stack) -> str:
    return f"kafka://127.0.0.1:{stack.ports.kafka_sasl_ssl}"


async def round_trip(url: str, kafka: KafkaSettings) -> list[bytes]:
    """Publish one event and consume it back; the values read."""
    bus = await open_event_bus(url, kafka)
    try:
        await bus.publish("instance.stored", "1.2.3", b'{"type":"test"}')
        consumer = await bus.consumer("instance.stored", "encrypted-links")
        try:
            records: list[Record] = []
            deadline = time.monotonic() + BOUND
            while not records and time.monotonic() < deadline:
                records = await consumer.poll(10, 1.0)
            await consumer.commit(records)
        finally:
            await consumer.close()
    finally:
        await bus.close()
    return [record.value for record in records]


def refusal(url: str, kafka: KafkaSettings) -> str:
    """The EventBusUnavailable message of opening the bus, within the bound."""
    started = time.monotonic()
    with pytest.raises(EventBusUnavailable) as refused:
        asyncio.run(round_trip(url, kafka))
    assert time.monotonic() - started < BOUND
    return str(refused.value)


def broker_still_serves(stack: servers.Stack) -> None:
    assert asyncio.run(round_trip(sasl_url(stack), sasl(stack))) == [b'{"type":"test"}']
    plain = KafkaSettings(partitions=1, topic_prefix=f"t{uuid.uuid4().hex[:12]}.")
    assert asyncio.run(round_trip(stack.env["MICROPACS_STORAGE__BUS_URL"], plain)) == [
        b'{"type":"test"}'
    ]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_events_go_over_sasl_ssl(stack: servers.Stack, mechanism: str) -> None:
    kafka = sasl(stack, sasl_mechanism=mechanism)
    assert asyncio.run(round_trip(sasl_url(stack), kafka)) == [b'{"type":"test"}']


def test_a_wrong_sasl_password_is_refused_naming_it(stack: servers.Stack) -> None:
    message = refusal(sasl_url(stack), sasl(stack, sasl_password="not-the-password"))
    assert "SASL SCRAM-SHA-512 login refused" in message
    assert "MICROPACS_KAFKA__SASL_PASSWORD" in message
    assert "not-the-password" not in message
    broker_still_serves(stack)


def test_a_broker_certificate_of_another_ca_is_refused(
    stack: servers.Stack, other_ca: Path
) -> None:
    message = refusal(sasl_url(stack), sasl(stack, ca_file=other_ca))
    assert "TLS certificate is not trusted" in message
    assert "MICROPACS_KAFKA__CA_FILE" in message
    broker_still_serves(stack)


def test_plain_text_to_the_tls_listener_fails_naming_the_protocol(stack: servers.Stack) -> None:
    plain = KafkaSettings(partitions=1, topic_prefix="unused.")
    message = refusal(sasl_url(stack), plain)
    assert "MICROPACS_KAFKA__SECURITY_PROTOCOL" in message
    broker_still_serves(stack)


def test_ssl_with_a_client_certificate(stack: servers.Stack) -> None:
    url = f"kafka://127.0.0.1:{stack.ports.kafka_ssl}"
    kafka = KafkaSettings(
        partitions=1,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}.",
        security_protocol="SSL",
        ca_file=stack.pki.ca,
        cert_file=stack.pki.client_cert,
        key_file=stack.pki.client_key,
    )
    assert asyncio.run(round_trip(url, kafka)) == [b'{"type":"test"}']
    without = kafka.model_copy(update={"cert_file": None, "key_file": None})
    assert "MICROPACS_KAFKA__CERT_FILE" in refusal(url, without)
    broker_still_serves(stack)


@pytest.fixture(scope="module")
def https_minio(stack: servers.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MinIO of this module's own speaking only HTTPS (``--certs-dir``), as host:port."""
    folder = tmp_path_factory.mktemp("minio-tls")
    certs_dir = folder / "certs"
    certs_dir.mkdir()
    (certs_dir / "public.crt").write_bytes(stack.pki.server_cert.read_bytes())
    (certs_dir / "private.key").write_bytes(stack.pki.server_key.read_bytes())
    port = free_port()
    with (folder / "minio.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(servers.STACK_HOME / "bin/minio"),
                "server",
                "--quiet",
                "--certs-dir",
                str(certs_dir),
                "--address",
                f"127.0.0.1:{port}",
                str(folder / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                "MINIO_ROOT_USER": servers.MINIO_USER,
                "MINIO_ROOT_PASSWORD": servers.MINIO_PASSWORD,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_CI_CD": "1",
                "HOME": str(folder),
            },
        )
    try:
        trust = ssl.create_default_context(cafile=stack.pki.ca)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/minio/health/live", timeout=2, context=trust
                ):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def s3(ca_file: Path | None) -> S3Settings:
    return S3Settings(
        access_key=servers.MINIO_USER, secret_key=servers.MINIO_PASSWORD, ca_file=ca_file
    )


def test_an_object_goes_over_https(stack: servers.Stack, https_minio: str) -> None:
    async def put_and_read() -> bytes:
        store = await open_blob_store(
            f"s3://{https_minio}/micropacs?secure=true", fsync=True, s3=s3(stack.pki.ca)
        )
        try:
            key = "default/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
            await store.put(key, io.BytesIO(b"DICM" * 1000), 4000)
            return b"".join([chunk async for chunk in store.read(key)])
        finally:
            await store.close()

    assert asyncio.run(put_and_read()) == b"DICM" * 1000


def test_an_object_store_certificate_of_another_ca_is_refused(
    https_minio: str, other_ca: Path
) -> None:
    started = time.monotonic()
    url = f"s3://{https_minio}/micropacs?secure=true"
    with pytest.raises(BlobStoreUnavailable, match=r"not trusted.*MICROPACS_S3__CA_FILE"):
        asyncio.run(open_blob_store(url, fsync=True, s3=s3(other_ca)))
    assert time.monotonic() - started < BOUND


def tls_catalog_url(stack: servers.Stack, ca: Path) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    return f"mongodb://127.0.0.1:{stack.ports.ferretdb_tls}/{name}?tls=true&tlsCAFile={ca}"


def test_the_catalog_over_tls(stack: servers.Stack) -> None:
    async def ping() -> None:
        catalog = await open_catalog(tls_catalog_url(stack, stack.pki.ca))
        try:
            await catalog.check()
        finally:
            await catalog.close()

    asyncio.run(ping())


def test_a_catalog_certificate_of_another_ca_is_refused(
    stack: servers.Stack, other_ca: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable, match="not trusted: check the URL's tlsCAFile"):
        asyncio.run(open_catalog(tls_catalog_url(stack, other_ca)))
    assert time.monotonic() - started < BOUND


def test_a_server_stores_and_indexes_over_encrypted_links(
    stack: servers.Stack, tmp_path: Path
) -> None:
    """micropacs serve with only the SASL_SSL listener and the TLS catalog: a C-STORE is
    published, consumed and indexed, then found by C-FIND."""
    env = {**isolated_env(stack), **stack.tls_env}
    env["MICROPACS_STORAGE__BLOB_URL"] = isolated_env(stack)["MICROPACS_STORAGE__BLOB_URL"]
    env["MICROPACS_KAFKA__TOPIC_PREFIX"] = f"t{uuid.uuid4().hex[:12]}."
    env["MICROPACS_STORAGE__CATALOG_URL"] = tls_catalog_url(stack, stack.pki.ca)
    files = dicomdata.make_study(tmp_path / "study", 3)
    server = start_server(tmp_path / "data", env=env)
    try:
        storescu(server, files)
        assert len(find_stored(server, "IMAGE", len(files))) == len(files)
    finally:
        server.stop()
    assert servers.KAFKA_PASSWORD not in server.log()
