"""A store URL's password never reaches an error message (issue 10)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus, open_worklist
from micropacs.errors import InvalidInput
from micropacs.redact import safe_url

SECRET = "Sekr3t"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://u:Sekr3t@h/?tls=true", "mongodb://***@h/?tls=true"),
        ("mongodb+srv://u:Sekr3t@cluster.example/db", "mongodb+srv://***@cluster.example/db"),
        ("kafka://u:Sekr3t@b1:9092,b2:9092", "kafka://***@b1:9092,b2:9092"),
        ("mongodb://u:Sek/r?3#t@h:27017/db", "mongodb://***@h:27017/db"),
        ("s3://h:9000/b?secure=true&secret_key=Sekr3t", "s3://h:9000/b?secure=true&secret_key=***"),
        ("mongodb://h/db?authMechanismProperties=AWS_SESSION_TOKEN:Sekr3t", None),
        ("file:///var/lib/a@b/objects", "file:///var/lib/a@b/objects"),
        ("mongodb://h:27017/db", "mongodb://h:27017/db"),
        ("u:Sekr3t@no-scheme", "***@no-scheme"),
    ],
)
def test_safe_url_hides_user_information_and_secret_parameters(url: str, shown: str | None) -> None:
    if shown is None:
        assert SECRET not in safe_url(url)
    else:
        assert safe_url(url) == shown


Opener = Callable[[str], Awaitable[object]]


async def _blob(url: str) -> object:
    return await open_blob_store(url, fsync=False)


@pytest.mark.parametrize(
    ("opener", "url"),
    [
        (open_catalog, "mongodb://u:Sekr3t@db.example/?tls=true"),  # no database name
        (open_worklist, "mongodb://u:Sekr3t@db.example/?tls=true"),
        (open_catalog, "mongodb+srv://u:Sekr3t@cluster.example/pacs"),  # unsupported scheme
        (open_event_bus, "amqp://u:Sekr3t@bus.example/"),
        (_blob, "s3://u:Sekr3t@minio.example:9000/"),  # no bucket
        (_blob, "s3://u:Sekr3t@minio.example:9000/a/b"),
        (open_catalog, "u:Sekr3t@db.example"),  # not a URL at all
    ],
)
def test_refused_store_urls_are_quoted_without_their_password(opener: Opener, url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(opener(url))  # type: ignore[arg-type]
    assert SECRET not in str(refused.value)
