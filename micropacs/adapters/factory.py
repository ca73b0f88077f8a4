"""Adapters chosen by URL scheme (ARCHITECTURE.md, "The three seams").

``file:///path`` and ``sqlite:///path`` open the embedded adapters, creating
their folders; ``s3://``, ``kafka://`` and ``mongodb://`` name the distributed
ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from micropacs.config import KafkaSettings, S3Settings
from micropacs.errors import CatalogUnavailable, EventBusUnavailable, InvalidInput, Unavailable
from micropacs.ports import BlobStore, Catalog, EventBus, Worklist
from micropacs.redact import safe_url


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if not scheme or "://" not in url:
        raise InvalidInput(
            f"{safe_url(url)!r} is not a URL such as file:///var/lib/micropacs/objects"
        )
    return scheme


def _local_path(url: str) -> Path:
    """The file system path of ``file://…`` or ``sqlite://…`` (``sqlite:///abs``, ``sqlite://rel``)."""
    rest = unquote(url.split("://", 1)[1])
    if not rest:
        raise InvalidInput(f"{safe_url(url)!r} names no path")
    return Path(rest)


def _refuse(url: str, scheme: str, port: str) -> InvalidInput:
    return InvalidInput(f"unsupported {port} URL {safe_url(url)!r} ({scheme}://)")


def _parent(path: Path, error: type[Unavailable]) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder {path.parent}: {exc.strerror}") from exc
    return path


class _Closable(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


async def _opened(remote: _C) -> _C:
    """``remote`` once opened; closed again (its client's threads and sockets) if that fails."""
    try:
        await remote.open()
    except BaseException:
        await remote.close()
        raise
    return remote


async def open_blob_store(url: str, *, fsync: bool, s3: S3Settings | None = None) -> BlobStore:
    """The BlobStore at ``url``: ``file:///folder`` (created if missing) or ``s3://host/bucket``."""
    scheme = _scheme(url)
    if scheme == "file":
        from micropacs.adapters.files import FileBlobStore

        store = FileBlobStore(_local_path(url), fsync=fsync)
        await store.check()
        return store
    if scheme == "s3":
        from micropacs.adapters.s3 import S3BlobStore, parse_url

        s3 = s3 or S3Settings()
        endpoint, bucket, secure = parse_url(url)
        remote = S3BlobStore(
            endpoint,
            bucket,
            s3.access_key,
            s3.secret_key.get_secret_value(),
            secure=secure,
            region=s3.region,
            ca_file=s3.ca_file,
        )
        await remote.check()
        return remote
    raise _refuse(url, scheme, "BlobStore (file:///path)")


async def open_blob_stores(
    url: str, groups: Mapping[str, str], *, fsync: bool, s3: S3Settings | None = None
) -> BlobStore:
    """The BlobStore of every storage group: the store at ``url`` for the default group
    and every group not in ``groups``, and for each group in ``groups`` the store at its
    URL (:mod:`micropacs.adapters.grouped`); just the store at ``url`` when ``groups`` is
    empty. Stores opened before one that fails are closed again."""
    default = await open_blob_store(url, fsync=fsync, s3=s3)
    if not groups:
        return default
    from micropacs.adapters.grouped import GroupedBlobStore

    own: dict[str, BlobStore] = {}
    try:
        for group, group_url in sorted(groups.items()):
            own[group] = await open_blob_store(group_url, fsync=fsync, s3=s3)
    except BaseException:
        for store in (*own.values(), default):
            await store.close()
        raise
    return GroupedBlobStore(default, own)


async def open_event_bus(
    url: str, kafka: KafkaSettings | None = None, *, publishes: bool = True
) -> EventBus:
    """The EventBus at ``url``: ``sqlite:///file.db`` (created if missing) or ``kafka://…``.

    A Kafka bus that only reads how far a group has come (``publishes=False``: a read
    barrier's) connects when first asked and needs no write permission, nor Kafka up
    when its process starts."""
    scheme = _scheme(url)
    if scheme == "kafka":
        from micropacs.adapters._kafka_security import KafkaSecurity
        from micropacs.adapters.kafka import KafkaEventBus, parse_url

        kafka = kafka or KafkaSettings()
        security = KafkaSecurity(
            protocol=kafka.security_protocol,
            ca_file=kafka.ca_file,
            cert_file=kafka.cert_file,
            key_file=kafka.key_file,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=kafka.sasl_password.get_secret_value(),
        )
        remote = KafkaEventBus(
            parse_url(url),
            partitions=kafka.partitions,
            replication=kafka.replication_factor,
            publish_timeout=kafka.publish_timeout,
            topic_prefix=kafka.topic_prefix,
            security=security,
            publishes=publishes,
        )
        await remote.open()
        return remote
    if scheme == "sqlite":
        from micropacs.adapters.sqlite_bus import SqliteEventBus

        bus = SqliteEventBus(_parent(_local_path(url), EventBusUnavailable))
        await bus.open()
        return bus
    raise _refuse(url, scheme, "EventBus (sqlite:///path)")


async def open_catalog(url: str) -> Catalog:
    """The Catalog at ``url``: ``sqlite:///file.db`` (created if missing)."""
    scheme = _scheme(url)
    if scheme == "mongodb":
        from micropacs.adapters.mongo import MongoCatalog

        return await _opened(MongoCatalog(url))
    if scheme == "sqlite":
        from micropacs.adapters.sqlite_catalog import SqliteCatalog

        catalog = SqliteCatalog(_parent(_local_path(url), CatalogUnavailable))
        await catalog.open()
        return catalog
    raise _refuse(url, scheme, "Catalog (sqlite:///path)")


async def open_worklist(url: str) -> Worklist:
    """The Worklist at ``url``: ``sqlite:///file.db`` (created if missing) or ``mongodb://…``
    (the catalog's database: its own collections beside the catalog's)."""
    scheme = _scheme(url)
    if scheme == "mongodb":
        from micropacs.adapters.mongo_worklist import MongoWorklist

        return await _opened(MongoWorklist(url))
    if scheme == "sqlite":
        from micropacs.adapters.sqlite_worklist import SqliteWorklist

        worklist = SqliteWorklist(_parent(_local_path(url), CatalogUnavailable))
        await worklist.open()
        return worklist
    raise _refuse(url, scheme, "Worklist (sqlite:///path)")
