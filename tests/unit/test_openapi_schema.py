"""The OpenAPI description against the routes the services really serve, so neither drifts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import schemathesis
from prometheus_client import CollectorRegistry
from schemathesis.core.result import Ok
from starlette.applications import Starlette
from starlette.routing import Route

from micropacs.adapters.factory import (
    open_blob_store,
    open_catalog,
    open_event_bus,
    open_worklist,
)
from micropacs.config import Settings
from micropacs.dicomweb.openapi import OPENAPI_PATH, describe, document, operations
from micropacs.http import build_http_app
from micropacs.read_barrier import ReadBarrier, ReadBarrierMetrics
from micropacs.service import Adapters
from micropacs.service_list import SERVICES, named


async def served_app(data_dir: Path, services: tuple[str, ...]) -> tuple[Starlette, Adapters]:
    """The HTTP app of a process running ``services``, over embedded adapters in ``data_dir``."""
    settings = Settings(data_dir=data_dir)
    bus = await open_event_bus(settings.bus_url)
    registry = CollectorRegistry()
    barrier = ReadBarrier(
        bus, settings.index.group, settings.read_barrier, ReadBarrierMetrics(registry)
    )
    adapters = Adapters(
        blobs=await open_blob_store(settings.blob_url, fsync=False),
        bus=bus,
        catalog=await open_catalog(settings.catalog_url),
        worklist=await open_worklist(settings.worklist_url),
        barrier=barrier,
    )
    apps = [service.build(settings, adapters, registry) for service in named(services)]
    routes = [route for app in apps for route in app.web_routes()]
    checks = {name: check for app in apps for name, check in app.checks.items()}
    return build_http_app(registry, checks, routes), adapters


async def close(adapters: Adapters) -> None:
    if adapters.barrier is not None:
        await adapters.barrier.close()
    for adapter in (adapters.blobs, adapters.bus, adapters.catalog, adapters.worklist):
        if adapter is not None:
            await adapter.close()


def served_operations(app: Starlette) -> set[tuple[str, str]]:
    """``(path, METHOD)`` of every route; HEAD is GET's (RFC 9110 9.3.2), as in the document."""
    return {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route) and not _web_page(route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def _web_page(route: Route) -> bool:
    """A page of the admin web UI: HTML for people, not part of the API description."""
    return str(getattr(route.endpoint, "__module__", "")).startswith("services.admin.web")


@pytest.mark.parametrize(
    "services", [tuple(s.name for s in SERVICES), ("ingest",), ("qr",), ("index",)]
)
def test_the_served_description_is_exactly_the_served_routes(
    tmp_path: Path, services: tuple[str, ...]
) -> None:
    async def run() -> None:
        app, adapters = await served_app(tmp_path, services)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pacs") as client:
                answer = await client.get(OPENAPI_PATH)
        finally:
            await close(adapters)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert operations(answer.json()) == served_operations(app)

    asyncio.run(run())


def test_every_route_of_every_service_is_described_and_nothing_else(tmp_path: Path) -> None:
    async def run() -> set[tuple[str, str]]:
        app, adapters = await served_app(tmp_path, tuple(s.name for s in SERVICES))
        await close(adapters)
        return served_operations(app)

    served = asyncio.run(run())
    described = operations(document())
    assert described - served == set(), "described but not served"
    assert served - described == set(), "served but not described"


def test_the_description_is_valid_openapi_with_every_reference_resolved() -> None:
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    loaded = list(schema.get_all_operations())  # resolves every $ref
    assert all(isinstance(result, Ok) for result in loaded), loaded
    assert len(loaded) == len(operations(document()))


def test_a_process_describes_only_what_it_serves() -> None:
    only_health = describe([("/healthz", ["GET", "HEAD"])])
    assert operations(only_health) == {("/healthz", "GET")}
    stow = describe([("/dicom-web/studies", ["POST"])])
    assert list(stow["paths"]["/dicom-web/studies"]) == ["post"]


def test_dicomweb_operations_need_credentials_and_health_does_not() -> None:
    paths = document()["paths"]
    for path in ("/healthz", "/readyz", OPENAPI_PATH):
        assert paths[path]["get"]["security"] == []
    for path, item in paths.items():
        for operation in item.values():
            if path.startswith("/dicom-web"):
                assert {"bearer": []} in operation["security"], path
                assert "401" in operation["responses"] and "403" in operation["responses"]
