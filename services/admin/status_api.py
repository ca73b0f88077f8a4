"""``/api/status``: the health of the archive at a glance.

For ``micropacs serve`` (every service in this process): this process's backend checks,
how far the index is behind (offsets per topic, from the read barrier), what the catalog
holds, the data directory's space, and the ingest and query rates since the previous
look, read from the process's own metrics registry. For separate deployments, each
service URL of MICROPACS_ADMIN__SERVICE_URLS is asked for its ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import asdict
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from prometheus_client import CollectorRegistry

from micropacs.auth.principal import Principal
from services.admin.access import VIEWER, context_of

CHECK_TIMEOUT = 5.0
RATES = {
    "ingest_instances": "micropacs_ingest_instances_total",
    "queries": "micropacs_qr_query_seconds_count",
    "index_upserts": "micropacs_index_upserts_total",
}
"""Counters whose rates the status shows (summed over their labels)."""


def _total(registry: CollectorRegistry, sample_name: str) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == sample_name
    )


class Rates:
    """Per-second rates of counters between two looks (the first look has none)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._last: tuple[float, dict[str, float]] | None = None

    def look(self) -> dict[str, float | None]:
        """Each counter's rate since the previous look, per second."""
        now = time.monotonic()
        totals = {name: _total(self._registry, sample) for name, sample in RATES.items()}
        last, self._last = self._last, (now, totals)
        if last is None or now <= last[0]:
            return dict.fromkeys(totals)
        elapsed = now - last[0]
        return {name: round((totals[name] - last[1][name]) / elapsed, 3) for name in totals}


async def _checked(name: str, check: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
        return name, str(exc) or type(exc).__name__
    return name, ""


async def _remote(client: httpx.AsyncClient, name: str, base: str) -> dict[str, Any]:
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
    return shown


def router() -> APIRouter:
    """The status route."""
    routes = APIRouter(tags=["status"])
    rates: dict[int, Rates] = {}

    @routes.get("/status")
    async def status(request: Request, _: Annotated[Principal, Depends(VIEWER)]) -> dict[str, Any]:
        """Backends, services, index lag, catalog counts, disk space and recent rates."""
        context = context_of(request)
        checks = {
            "catalog": context.catalog.check,
            "event_bus": context.bus.check,
            "worklist": context.worklist.check,
            "blob_store": context.blobs.check,
        }
        results = await asyncio.gather(*(_checked(n, c) for n, c in checks.items()))
        failures = {name: why for name, why in results if why}
        shown: dict[str, Any] = {
            "ready": not failures,
            "failed": failures,
            "checked": sorted(checks),
        }
        try:
            counts = await context.catalog.counts()
            shown["catalog"] = asdict(counts)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            shown["catalog"] = {"unknown": type(exc).__name__}
        if context.barrier is not None:
            try:
                shown["index_behind_offsets"] = await context.barrier.progress()
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                shown["index_behind_offsets"] = {"unknown": type(exc).__name__}
        try:
            usage = shutil.disk_usage(context.settings.data_dir)
            shown["data_dir"] = {"free_bytes": usage.free, "size_bytes": usage.total}
        except OSError:
            shown["data_dir"] = {}
        window = rates.setdefault(id(context.registry), Rates(context.registry))
        shown["rates_per_second"] = window.look()
        urls = context.settings.admin.service_urls
        if urls:
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
                shown["services"] = list(
                    await asyncio.gather(*(_remote(client, n, u) for n, u in sorted(urls.items())))
                )
        return shown

    return routes
