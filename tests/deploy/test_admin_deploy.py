"""The admin service as the chart and compose deploy it: the Ingress routes every path the
admin serves (and none of /metrics, /healthz, /readyz), the schema refuses a session key or
client secret given as a plain value, compose runs it with its settings and Prometheus
scrapes it, the image carries htmx, the dashboard shows the admin's and the audit trail's
series."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.routing import Mount, Route

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus, open_worklist
from micropacs.config import Settings
from micropacs.service import Adapters
from services.admin.app import build
from tests.deploy.test_artifacts import (
    CHART,
    ROOT,
    compose,
    exported_series,
    micropacs_series,
    render,
    tool,
)

ADMIN_VALUES = CHART / "ci" / "admin-values.yaml"


def admin_top_paths(tmp_path: Path) -> set[str]:
    """The first segment of every path the admin service answers, as it is built."""

    async def paths() -> set[str]:
        settings = Settings(data_dir=tmp_path)
        settings.auth.backend = "local"
        adapters = Adapters(
            blobs=await open_blob_store(f"file://{tmp_path / 'objects'}", fsync=False),
            bus=await open_event_bus(f"sqlite://{tmp_path / 'events.db'}"),
            catalog=await open_catalog(f"sqlite://{tmp_path / 'catalog.db'}"),
            worklist=await open_worklist(f"sqlite://{tmp_path / 'worklist.db'}"),
        )
        try:
            routes = build(settings, adapters, CollectorRegistry()).web_routes()
            return {
                "/" + route.path.strip("/").split("/")[0]
                for route in routes
                if isinstance(route, Route | Mount)
            }
        finally:
            for adapter in (adapters.blobs, adapters.bus, adapters.catalog, adapters.worklist):
                assert adapter is not None
                await adapter.close()

    return asyncio.run(paths())


def ingress_paths() -> dict[str, tuple[str, str]]:
    """Each path of the admin Ingress: its path type and the Service it goes to."""
    ingresses = [
        d for d in yaml.safe_load_all(render(ADMIN_VALUES)) if d and d["kind"] == "Ingress"
    ]
    assert len(ingresses) == 1
    paths = ingresses[0]["spec"]["rules"][0]["http"]["paths"]
    return {p["path"]: (p["pathType"], p["backend"]["service"]["name"]) for p in paths}


def test_the_ingress_routes_every_admin_path_and_no_probe_or_metrics(tmp_path: Path) -> None:
    routed = ingress_paths()
    served = admin_top_paths(tmp_path)
    assert "/api" in served and "/studies" in served and "/login" in served
    for path in served:
        assert path in routed, f"the admin serves {path}, the Ingress does not route it"
        assert routed[path][1] == "site-micropacs-admin", path
    assert routed["/"] == ("Exact", "site-micropacs-admin")
    # The thumbnails and previews: qr's DICOMweb on the same origin.
    assert routed["/dicom-web"] == ("Prefix", "site-micropacs-qr")
    assert not {"/metrics", "/healthz", "/readyz"} & set(routed)


@pytest.mark.parametrize(
    "plain",
    ["admin.sessionKey.value=a-session-key", "admin.oidcLogin.clientSecret.value=a-secret"],
)
def test_the_schema_refuses_admin_secrets_as_plain_values(plain: str) -> None:
    result = subprocess.run(
        [tool("helm"), "lint", str(CHART), "-f", str(ADMIN_VALUES), "--set", plain],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "'value' not allowed" in result.stdout + result.stderr


def test_compose_runs_admin_with_its_settings_and_prometheus_scrapes_it() -> None:
    services: dict[str, Any] = compose()["services"]
    admin = services["admin"]
    assert admin["command"] == ["run", "admin"]
    assert admin["ports"] == ["127.0.0.1:8082:8080"]
    environment = admin["environment"]
    # ZIP downloads and sends read the objects; the catalog as the other services' user.
    assert "MICROPACS_S3_USER" in environment["MICROPACS_S3__ACCESS_KEY"]
    assert "${MICROPACS_MONGO_USER" in environment["MICROPACS_STORAGE__CATALOG_URL"]
    assert "${MICROPACS_ADMIN_SESSION_KEY:?" in environment["MICROPACS_AUTH__SESSION_KEY"]
    assert set(yaml.safe_load(environment["MICROPACS_ADMIN__SERVICE_URLS"])) == {
        "ingest",
        "index",
        "qr",
        "worklist",
        "router",
    }
    # qr checks the admin's session cookies for the thumbnails.
    qr = services["qr"]["environment"]
    assert qr["MICROPACS_AUTH__SESSION_KEY"] == environment["MICROPACS_AUTH__SESSION_KEY"]
    assert admin["depends_on"]["qr"] == {"condition": "service_healthy"}
    targets = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    scraped = [
        t for job in targets["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert "admin:8080" in scraped


def test_the_image_carries_htmx_for_the_web_ui() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN bash /tools/htmx/install.sh /htmx" in dockerfile
    assert "COPY --from=htmx /htmx ./services/admin/web/static/vendor" in dockerfile
    package_data = (ROOT / "pyproject.toml").read_text()
    assert '"static/vendor/*"' in package_data


def test_the_dashboard_shows_the_admin_and_the_audit_trail() -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in micropacs_series(target["expr"])
    }
    admin = {
        "micropacs_admin_requests_total",
        "micropacs_admin_request_seconds",
        "micropacs_admin_send_jobs_started_total",
        "micropacs_admin_send_jobs_finished_total",
        "micropacs_admin_sent_instances_total",
        "micropacs_admin_deletions_requested_total",
        "micropacs_audit_recorded_total",
        "micropacs_audit_failures_total",
    }
    assert admin <= used, admin - used
    assert admin <= exported_series(), admin - exported_series()
    logins = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
        if "login-failed" in target["expr"]
    ]
    assert logins and all("micropacs_audit_recorded_total" in expr for expr in logins)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
