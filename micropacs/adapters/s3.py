"""The distributed BlobStore: any S3 service (MinIO, Ceph RGW, SeaweedFS, a cloud S3).

A key ``<group>/<study>/<series>/<instance>.dcm`` is stored in the bucket
``<bucket>-<group>`` (one bucket per storage group, Conquest's "FS group") as
the object ``<study>/<series>/<instance>.dcm``. Buckets are created on first
use. Large objects are uploaded in parts (multipart upload) and read as
streams, never held whole in memory. Only the S3 API common to every S3
service is used, through the ``minio`` SDK.

``?secure=true`` in the URL selects HTTPS with the BCP 195 profile of
:func:`micropacs.tls.harden` (TLS 1.2+), the service's certificate checked
against ``ca_file`` (or the system's trust store) and its host name; an
untrusted certificate fails with advice naming ``MICROPACS_S3__CA_FILE``.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error

from micropacs.adapters.files import check_key
from micropacs.errors import BlobStoreUnavailable, InvalidInput, NotFound
from micropacs.ports import BlobInfo
from micropacs.redact import safe_url
from micropacs.tls import ClientTls

T = TypeVar("T")

PART_SIZE = 16 * 1024 * 1024
"""Multipart upload part size: large enough for few parts, small enough to stream."""

MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


def parse_url(url: str) -> tuple[str, str, bool]:
    """``s3://host:port/bucket[?secure=true]`` as (endpoint, bucket prefix, secure)."""
    parts = urlsplit(url)
    bucket = parts.path.strip("/")
    if parts.scheme != "s3" or not parts.netloc or not bucket or "/" in bucket:
        raise InvalidInput(f"{safe_url(url)!r} is not s3://HOST:PORT/BUCKET")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]", bucket):
        raise InvalidInput(f"bucket name {bucket!r}: use 3-42 lowercase letters, digits, '.', '-'")
    return parts.netloc, bucket, "secure=true" in parts.query.lower()


def _untrusted(exc: BaseException) -> str:
    """The reason of the certificate verification failure behind ``exc``, if one is."""
    seen: BaseException | None = exc
    for _ in range(8):  # urllib3 wraps: MaxRetryError -> SSLError -> SSLCertVerificationError
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message)
        seen = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if isinstance(seen, urllib3.exceptions.SSLError) and seen.args:
            inner = seen.args[0]
            seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return ""


class _Exactly:
    """A reader of ``size`` bytes that refuses a source ending early."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self._left = size

    def read(self, count: int = -1) -> bytes:
        wanted = self._left if count < 0 else min(count, self._left)
        chunk = self._source.read(wanted)
        if len(chunk) < wanted:
            raise InvalidInput(f"the source ended {self._left - len(chunk)} bytes early")
        self._left -= len(chunk)
        return chunk


class S3BlobStore:
    """BlobStore over S3, one bucket per storage group."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        if ca_file is not None and not secure:
            raise InvalidInput(
                "MICROPACS_S3__CA_FILE is set but the blob URL is plain HTTP: add ?secure=true"
            )
        tls: dict[str, Any] = {}
        if secure:
            try:
                tls["ssl_context"] = ClientTls(ca_file).context()
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(
                    f"MICROPACS_S3__CA_FILE does not load ({exc}): give a PEM file of CA"
                    " certificates"
                ) from exc
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            maxsize=16,
            **tls,
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._bucket = bucket
        self._endpoint = endpoint
        self._known_buckets: set[str] = set()

    def _locate(self, key: str) -> tuple[str, str]:
        group, _, name = check_key(key).partition("/")
        if not name:
            raise InvalidInput(f"object key {key!r} has no storage group")
        bucket = f"{self._bucket}-{group.lower().replace('_', '-')}"
        return bucket, name

    async def _run(self, action: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except S3Error as exc:
            if exc.code in MISSING:
                raise NotFound(f"{action}: no such object") from exc
            raise BlobStoreUnavailable(
                f"{action} failed at {self._endpoint}: {exc.code} {exc.message}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            untrusted = _untrusted(exc)
            if untrusted:
                raise BlobStoreUnavailable(
                    f"{action}: the TLS certificate of object store {self._endpoint} is not"
                    f" trusted ({untrusted}); check MICROPACS_S3__CA_FILE"
                ) from exc
            raise BlobStoreUnavailable(
                f"{action}: object store {self._endpoint} unreachable ({exc}); "
                "check that it runs and the URL and credentials are right"
            ) from exc

    def _ensure_bucket(self, bucket: str) -> None:
        if bucket in self._known_buckets:
            return
        if not self._client.bucket_exists(bucket):
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._known_buckets.add(bucket)

    async def put(self, key: str, source: BinaryIO, size: int) -> None:
        """Upload ``size`` bytes from ``source`` (multipart above one part)."""
        bucket, name = self._locate(key)

        def upload() -> None:
            self._ensure_bucket(bucket)
            self._client.put_object(
                bucket,
                name,
                cast(BinaryIO, _Exactly(source, size)),
                size,
                content_type="application/dicom",
                part_size=PART_SIZE,
            )

        await self._run(f"put {key}", upload)

    async def put_file(self, key: str, path: Path) -> None:
        """Upload a local file, then remove it (the caller gave it to us)."""
        bucket, name = self._locate(key)

        def upload() -> None:
            self._ensure_bucket(bucket)
            self._client.fput_object(
                bucket, name, str(path), content_type="application/dicom", part_size=PART_SIZE
            )

        await self._run(f"put {key}", upload)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream the object's bytes."""
        bucket, name = self._locate(key)
        response: Any = await self._run(f"get {key}", lambda: self._client.get_object(bucket, name))
        try:
            stream = response.stream(chunk_size)
            while True:
                chunk = await self._run(f"get {key}", lambda: next(stream, b""))
                if not chunk:
                    break
                yield chunk
        finally:
            response.close()
            response.release_conn()

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """Download the object to a temporary file for the duration of the context."""
        bucket, name = self._locate(key)
        fd, temp = tempfile.mkstemp(suffix=".dcm")
        os.close(fd)
        path = Path(temp)
        try:
            await self._run(f"get {key}", lambda: self._client.fget_object(bucket, name, str(path)))
            yield path
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def stat(self, key: str) -> BlobInfo | None:
        """The object's size, or None."""
        bucket, name = self._locate(key)
        try:
            info: Any = await self._run(
                f"stat {key}", lambda: self._client.stat_object(bucket, name)
            )
        except NotFound:
            return None
        return BlobInfo(key=key, size=int(info.size), modified=info.last_modified)

    async def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""
        bucket, name = self._locate(key)
        try:
            await self._run(f"delete {key}", lambda: self._client.remove_object(bucket, name))
        except NotFound:
            return

    async def iterate(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key under ``prefix`` in every storage group's bucket. A prefix naming its
        group (``<group>/…``) lists that group's bucket alone, by the rest of the prefix
        on the server: a study's objects, or a group's journal, without listing the rest."""
        group, slash, rest = prefix.partition("/")
        if slash:
            bucket, _ = self._locate(f"{group}/x")  # the group's bucket, the name checked
            try:
                names = await self._run("list objects", partial(self._names, bucket, rest))
            except NotFound:
                return  # no bucket: the group holds nothing yet
            for name in names:
                yield f"{group}/{name}"
            return
        buckets: list[Any] = await self._run("list buckets", self._client.list_buckets)
        for bucket in buckets:
            if not bucket.name.startswith(f"{self._bucket}-"):
                continue
            group = bucket.name[len(self._bucket) + 1 :]
            names = await self._run("list objects", partial(self._names, bucket.name))
            for name in names:
                key = f"{group}/{name}"
                if key.startswith(prefix):
                    yield key

    def _names(self, bucket: str, prefix: str = "") -> list[str]:
        found = self._client.list_objects(bucket, prefix=prefix or None, recursive=True)
        return [str(o.object_name) for o in found]

    async def check(self) -> None:
        """Raise BlobStoreUnavailable unless the service answers with these credentials."""
        await self._run("check", self._client.list_buckets)

    async def close(self) -> None:
        """Nothing to release: connections are pooled per request."""
