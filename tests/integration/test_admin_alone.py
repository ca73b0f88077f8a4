"""``micropacs run admin`` in a process of its own beside the archive, as compose and the
chart run it: the same stores, the same session key. A user logs in on the admin, its Study
page links the thumbnails at the archive's DICOMweb and allows that origin for images, and
the archive takes the browser's session for them (for reads only). Its status shows the
archive's health and its ingest rate, read from the archive's own /metrics."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from tests import dicomdata
from tests.integration.server import Server, micropacs, start_server
from tests.integration.test_dicomweb import multipart_body

SESSION_KEY = "a-session-key-shared-by-admin-and-qr-0123456789"
PASSWORD = "a long password 123"


@pytest.fixture
def archive_and_admin(
    server_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Server, Server]]:
    env = {
        **server_env,
        "MICROPACS_AUTH__BACKEND": "local",
        "MICROPACS_AUTH__SESSION_KEY": SESSION_KEY,
    }
    if not server_env:
        # Embedded stores: one set of files for both processes.
        shared = tmp_path / "shared"
        shared.mkdir()
        env |= {
            "MICROPACS_STORAGE__BLOB_URL": f"file://{shared / 'objects'}",
            "MICROPACS_STORAGE__BUS_URL": f"sqlite://{shared / 'events.db'}",
            "MICROPACS_STORAGE__CATALOG_URL": f"sqlite://{shared / 'catalog.db'}",
            "MICROPACS_STORAGE__WORKLIST_URL": f"sqlite://{shared / 'worklist.db'}",
        }
    archive = start_server(tmp_path / "archive", env=env)
    try:
        admin_env = {
            **env,
            "MICROPACS_ADMIN__DICOMWEB_URL": f"{archive.http}/dicom-web",
            "MICROPACS_ADMIN__SERVICE_URLS": json.dumps({"archive": archive.http}),
        }
        admin = start_server(tmp_path / "admin", env=admin_env, command=("run", "admin"))
        try:
            yield archive, admin
        finally:
            admin.stop()
    finally:
        archive.stop()


def test_the_admin_alone_shares_the_browser_session_with_the_archive(
    archive_and_admin: tuple[Server, Server], tmp_path: Path
) -> None:
    archive, admin = archive_and_admin
    assert admin.dicom_port == 0, "admin answers no DICOM"
    (path,) = dicomdata.make_study(tmp_path / "study", 1, "CT")
    study_uid = str(dcmread(path).StudyInstanceUID)
    series_uid = str(dcmread(path).SeriesInstanceUID)
    operator = micropacs(
        "tokens", "add", "--role", "operator", data_dir=archive.data_dir, env=archive.env
    ).stdout.strip()
    content_type, body = multipart_body([path.read_bytes()])

    def stow(content_type: str, content: bytes) -> None:
        stored = httpx.post(
            f"{archive.http}/dicom-web/studies",
            content=content,
            headers={"authorization": f"Bearer {operator}", "content-type": content_type},
            timeout=30,
        )
        assert stored.status_code == 200, stored.text

    stow(content_type, body)
    micropacs(
        "users", "add", "tech", "--role", "viewer", "--password", PASSWORD,
        data_dir=admin.data_dir, env=admin.env,
    )  # fmt: skip

    with httpx.Client(base_url=admin.http, timeout=30) as browser:
        form = browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        login = {"username": "tech", "password": PASSWORD, "csrf_token": token[1]}
        assert browser.post("/login", data=login).status_code == 303
        first = browser.get("/api/status").json()
        assert [(s["service"], s["healthz"], s["readyz"]) for s in first["services"]] == [
            ("archive", True, True)
        ]
        assert first["rates_per_second"]["ingest_instances"] is None, "one look gives no rate"
        time.sleep(0.5)
        stow(*multipart_body([p.read_bytes() for p in dicomdata.make_study(tmp_path / "more", 3)]))
        rates = browser.get("/api/status").json()["rates_per_second"]
        assert rates["ingest_instances"] > 0, rates
        page = browser.get(f"/studies/{study_uid}")
        assert page.status_code == 200, page.text
        images = next(
            part for part in page.headers["content-security-policy"].split(";") if "img-src" in part
        )
        assert archive.http in images.split()
        thumbnail = f"{archive.http}/dicom-web/studies/{study_uid}/series/{series_uid}/thumbnail"
        assert thumbnail in html.unescape(page.text)
        # The browser's cookie goes to the archive's host too (cookies ignore ports).
        shown = browser.get(thumbnail)
        assert shown.status_code == 200, shown.text
        assert shown.headers["content-type"].startswith("image/")
        # The session reads DICOMweb, and may not write there.
        refused = browser.post(
            f"{archive.http}/dicom-web/studies",
            content=body,
            headers={"content-type": content_type},
        )
        assert refused.status_code in (401, 403)
    assert httpx.get(thumbnail, timeout=30).status_code == 401
