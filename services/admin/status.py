"""The archive's health at a glance: what ``GET /api/status`` answers and the Status page shows.

One :class:`StatusReader` per admin process (on its :class:`AdminContext`) gathers, for
both: this process's backend checks, the catalog's counts, the storage used per
storage group, how far the index is behind (offsets per topic, from the read barrier),
the data directory's space, the ingest, query and index rates since the previous look,
and, for separate deployments, each service URL of ``MICROPACS_ADMIN__SERVICE_URLS`` asked
for its ``/healthz`` and ``/readyz``. The rates are read from this process's own metrics
registry plus, in a separate deployment, each configured service's ``/metrics``: the
services' own counters, never a copy kept here.

The storage figures are the catalog's aggregate (:meth:`~micropacs.ports.Catalog.
storage_usage`), never a listing of the objects; since MongoDB sums them in the
database on each call, they are asked for at most every :data:`STORAGE_MAX_AGE`
seconds. A part that fails is shown as failing; gathering never raises.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from micropacs.ports import CatalogCounts, StorageUsage

if TYPE_CHECKING:
    from services.admin.context import AdminContext

CHECK_TIMEOUT: Final = 5.0
STORAGE_MAX_AGE: Final = 30.0
"""Seconds the storage figures are shown before the catalog is asked again."""
RATES: Final = {
    "ingest_instances": "micropacs_ingest_instances_total",
    "queries": "micropacs_qr_query_seconds_count",
    "index_upserts": "micropacs_index_upserts_total",
}
"""Counters whose rates the status shows (summed over their labels)."""
METRICS_MAX_BYTES: Final = 8 * 1024 * 1024
"""A service's /metrics longer than this is not read for the rates."""


def totals_of(samples: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The :data:`RATES` counters' totals among ``(sample name, value)`` pairs."""
    wanted = {sample: name for name, sample in RATES.items()}
    totals = dict.fromkeys(RATES, 0.0)
    for sample, value in samples:
        name = wanted.get(sample)
        if name is not None:
            totals[name] += value
    return totals


def registry_samples(registry: CollectorRegistry) -> Iterator[tuple[str, float]]:
    """Every sample of a registry of this process."""
    for metric in registry.collect():
        for sample in metric.samples:
            yield sample.name, sample.value


def exposition_samples(text: str) -> Iterator[tuple[str, float]]:
    """Every sample of a service's /metrics answer."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.value


class Rates:
    """Per-second rates of counters between two looks (the first look has none).

    A look whose totals come from other services than the previous one's (one did not
    answer), or whose total went down (a service restarted), gives no rate rather than an
    inflated or negative one."""

    def __init__(self) -> None:
        self._last: tuple[float, frozenset[str], dict[str, float]] | None = None

    def look(
        self, totals: dict[str, float], sources: frozenset[str] = frozenset()
    ) -> dict[str, float | None]:
        """Each counter's rate since the previous look, per second; ``sources`` names the
        services whose counters ``totals`` sums."""
        now = time.monotonic()
        last, self._last = self._last, (now, sources, totals)
        if last is None or now <= last[0] or last[1] != sources:
            return dict.fromkeys(totals)
        elapsed = now - last[0]
        before = last[2]
        return {
            name: round((total - before[name]) / elapsed, 3) if total >= before[name] else None
            for name, total in totals.items()
        }


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _checked(check: Callable[[], Awaitable[None]]) -> str:
    """ "" when ``check`` passes in time, else why not."""
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
        return _reason(exc)
    return ""


async def _remote(
    client: httpx.AsyncClient, name: str, base: str
) -> tuple[dict[str, Any], dict[str, float] | None]:
    """A service's health and readiness as shown, and its rates' counters (None when its
    /metrics could not be read)."""
    shown: dict[str, Any] = {"service": name, "url": base}
    for probe in ("healthz", "readyz"):
        try:
            answer = await client.get(f"{base.rstrip('/')}/{probe}")
            shown[probe] = answer.status_code == 200
            if probe == "readyz":
                shown["detail"] = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            shown[probe] = False
            shown.setdefault("detail", {"error": type(exc).__name__})
    return shown, await _remote_totals(client, base)


async def _remote_totals(client: httpx.AsyncClient, base: str) -> dict[str, float] | None:
    try:
        async with client.stream("GET", f"{base.rstrip('/')}/metrics") as answer:
            if answer.status_code != 200:
                return None
            body = bytearray()
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > METRICS_MAX_BYTES:
                    return None
        return totals_of(exposition_samples(body.decode("utf-8", "replace")))
    except (httpx.HTTPError, ValueError):
        return None


@dataclass(frozen=True)
class SystemStatus:
    """One look at the archive; ``*_error`` says why a part is missing ("" when shown)."""

    failed: dict[str, str]
    """The backend checks that failed, with why."""
    checked: list[str]
    counts: CatalogCounts | None
    counts_error: str
    storage: list[StorageUsage] | None
    storage_error: str
    index_behind: dict[str, int] | None
    """Offsets per topic the index has still to read (None without a read barrier)."""
    index_error: str
    disk: dict[str, int]
    """The data directory's ``free_bytes`` and ``size_bytes`` (empty when unreadable)."""
    rates: dict[str, float | None]
    services: list[dict[str, Any]] | None
    """Each separate service's health and readiness (None when none is configured)."""

    @property
    def ready(self) -> bool:
        """Whether every backend check passed."""
        return not self.failed

    def as_json(self) -> dict[str, Any]:
        """The API's answer."""
        shown: dict[str, Any] = {
            "ready": self.ready,
            "failed": self.failed,
            "checked": self.checked,
            "catalog": asdict(self.counts)
            if self.counts is not None
            else {"unknown": self.counts_error},
            "storage_groups": [asdict(group) for group in self.storage]
            if self.storage is not None
            else {"unknown": self.storage_error},
            "data_dir": self.disk,
            "rates_per_second": self.rates,
        }
        if self.index_behind is not None or self.index_error:
            shown["index_behind_offsets"] = (
                self.index_behind
                if self.index_behind is not None
                else {"unknown": self.index_error}
            )
        if self.services is not None:
            shown["services"] = self.services
        return shown


@dataclass
class StatusReader:
    """Gathers :class:`SystemStatus`, keeping the rates' previous look and the storage
    figures between looks (one per process, shared by the API and the page)."""

    storage_max_age: float = STORAGE_MAX_AGE
    """Seconds the storage figures are kept between looks."""
    _rates: Rates | None = None
    _storage: tuple[float, list[StorageUsage]] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read(self, context: AdminContext) -> SystemStatus:
        """The archive's status now (every part bounded by :data:`CHECK_TIMEOUT`)."""
        checks = {
            "catalog": context.catalog.check,
            "event_bus": context.bus.check,
            "worklist": context.worklist.check,
            "blob_store": context.blobs.check,
        }
        reasons = await asyncio.gather(*(_checked(check) for check in checks.values()))
        counts: CatalogCounts | None = None
        counts_error = ""
        try:
            counts = await asyncio.wait_for(context.catalog.counts(), CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            counts_error = _reason(exc)
        storage, storage_error = await self._storage_usage(context)
        index_behind: dict[str, int] | None = None
        index_error = ""
        if context.barrier is not None:
            try:
                index_behind = dict(
                    await asyncio.wait_for(context.barrier.progress(), CHECK_TIMEOUT)
                )
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                index_error = _reason(exc)
        try:
            usage = shutil.disk_usage(context.settings.data_dir)
            disk = {"free_bytes": usage.free, "size_bytes": usage.total}
        except OSError:
            disk = {}
        if self._rates is None:
            self._rates = Rates()
        totals = totals_of(registry_samples(context.registry))
        sources: set[str] = set()
        services = None
        urls = context.settings.admin.service_urls
        if urls:
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
                answers = await asyncio.gather(
                    *(_remote(client, n, u) for n, u in sorted(urls.items()))
                )
            services = [shown for shown, _ in answers]
            for shown, remote in answers:
                if remote is not None:
                    sources.add(shown["service"])
                    for name, value in remote.items():
                        totals[name] += value
        return SystemStatus(
            failed={name: why for name, why in zip(checks, reasons, strict=True) if why},
            checked=sorted(checks),
            counts=counts,
            counts_error=counts_error,
            storage=storage,
            storage_error=storage_error,
            index_behind=index_behind,
            index_error=index_error,
            disk=disk,
            rates=self._rates.look(totals, frozenset(sources)),
            services=services,
        )

    async def _storage_usage(self, context: AdminContext) -> tuple[list[StorageUsage] | None, str]:
        async with self._lock:  # one question to the catalog at a time, not one per viewer
            kept = self._storage
            if kept is not None and time.monotonic() - kept[0] < self.storage_max_age:
                return kept[1], ""
            try:
                groups = await asyncio.wait_for(context.catalog.storage_usage(), CHECK_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                return None, _reason(exc)
            self._storage = (time.monotonic(), groups)
            return groups, ""
