"""The admin's system status, in the API and on the Status page, from one gathering.

Stored objects show up as the storage used by their storage group (the catalog's
aggregate of the sizes it indexed), with the catalog's counts, the backend checks and
the rates; the page shows what the API answers.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from pydicom import dcmread
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.http import build_http_app
from services.admin.web.manage import byte_size
from tests.service.conftest import Running
from tests.service.peers import ct_files, store


def open_app(pacs: Running) -> Starlette:
    """The services' routes behind a gate that lets everyone in (authentication is tested
    elsewhere; this is about what the status says)."""
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "off"
    gate = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=True, basic=False
    )
    routes = [route for app in pacs.apps for route in app.web_routes()]
    return build_http_app(pacs.registry, {}, routes, access=gate)


def get(pacs: Running, app: Starlette, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacs") as client:
            return await client.get(path)

    return pacs.loop_call(call())


def test_storage_used_per_group_in_the_api_and_on_the_page(pacs: Running, tmp_path: Path) -> None:
    app = open_app(pacs)
    reader = pacs.admin.context.status
    reader.storage_max_age = 3600  # no look below is that far apart
    empty = get(pacs, app, "/api/status").json()
    assert empty["storage_groups"] == [] and empty["catalog"]["instances"] == 0
    assert "Nothing is stored yet" in get(pacs, app, "/status").text

    files = ct_files(tmp_path / "ct", 3)
    assert store(pacs, *files) == [0, 0, 0]
    located = pacs.wait_indexed([dcmread(path).SOPInstanceUID for path in files])
    stored = sum(location.size for location in located)
    assert stored > 0

    # The figures of the first look are kept for a while...
    assert get(pacs, app, "/api/status").json()["storage_groups"] == []
    # ...and asked for again once they are older than that.
    reader.storage_max_age = 0
    status = get(pacs, app, "/api/status").json()
    assert status["ready"] is True
    assert status["storage_groups"] == [
        {"storage_group": "default", "instances": 3, "bytes": stored}
    ]
    assert status["catalog"] == {"patients": 1, "studies": 1, "series": 1, "instances": 3}
    assert set(status["rates_per_second"]) == {"ingest_instances", "queries", "index_upserts"}

    page = get(pacs, app, "/status")
    assert page.status_code == 200
    row = re.search(r"<tr><td>default</td><td>3</td><td>([^<]+)</td></tr>", page.text)
    assert row is not None, page.text
    assert row.group(1) == byte_size(stored)
    assert re.search(r"<th scope=\"row\">instances</th><td>3</td>", page.text)


def test_byte_sizes_read_as_people_write_them() -> None:
    assert byte_size(0) == "0 B"
    assert byte_size(1023) == "1023 B"
    assert byte_size(1536) == "1.5 KiB"
    assert byte_size(320 * 1024**2) == "320.0 MiB"
    assert byte_size(3 * 1024**5) == "3,072.0 TiB"
