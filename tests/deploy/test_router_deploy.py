"""The router as the chart and compose deploy it: the N-ACTION has a DICOM Service of its
own (no other process answers it), the rules and policies the chart writes are files the
router accepts, one pod alone runs the retention policies on their schedule, compose runs
the router and Prometheus scrapes it, the dashboard shows Storage Commitment and IAN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from micropacs.routing.rules import parse_rules
from micropacs.service_list import SERVICES
from services.router.retention_policies import configured_policies
from tests.deploy.test_artifacts import (
    CHART,
    ROOT,
    SCENARIOS,
    compose,
    exported_series,
    micropacs_series,
    render,
)
from tests.deploy.test_exposure_defaults import image_environment, settings_of

ROUTER_VALUES = CHART / "ci" / "router-values.yaml"


def documents(values: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(values)) if doc]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


def test_only_the_router_answers_storage_commitment_so_it_has_its_own_dicom_service() -> None:
    """`micropacs run ingest` answers no N-ACTION: the ingest's load-balanced endpoint cannot
    take Storage Commitment, so the router pods get a DICOM Service of their own."""
    answering = [service.name for service in SERVICES if "N-ACTION" in service.operations]
    assert answering == ["router"]
    docs = documents(ROUTER_VALUES)
    service = named(docs, "Service", "site-micropacs-router-dicom")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "router"
    assert service["spec"]["ports"][0] == {
        "name": "dicom",
        "port": 104,
        "targetPort": "dicom",
        "protocol": "TCP",
    }
    assert service["spec"]["loadBalancerIP"] == "10.10.0.25"
    ingest = named(docs, "Service", "site-micropacs-dicom")
    assert ingest["spec"]["selector"]["app.kubernetes.io/component"] == "ingest"


def test_the_files_the_chart_writes_are_rules_and_policies_the_router_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(ROUTER_VALUES)
    files = named(docs, "ConfigMap", "site-micropacs-router")["data"]
    rules = parse_rules(files["rules.yaml"])
    assert [rule.name for rule in rules.rules] == ["ct-to-workstation", "backup"]
    config = named(docs, "ConfigMap", "site-micropacs")["data"]
    deployment = named(docs, "Deployment", "site-micropacs-router-retention")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    own = {env["name"]: str(env["value"]) for env in container["env"] if "value" in env}
    assert own["MICROPACS_RETENTION__POLICIES_FILE"] == "/etc/micropacs/router/retention.yaml"
    # The file where the pod mounts it is here in tmp_path; the rest as the pod has it.
    (tmp_path / "retention.yaml").write_text(files["retention.yaml"])
    own["MICROPACS_RETENTION__POLICIES_FILE"] = str(tmp_path / "retention.yaml")
    own.pop("MICROPACS_ROUTER__RULES_FILE")
    settings = settings_of({**image_environment(), **config, **own}, monkeypatch)
    assert settings.storage.groups == {"archive": "s3://nas-minio.storage:9000/pacs-archive"}
    policies = configured_policies(settings)
    assert [policy.name for policy in policies.policies] == ["tier-to-nas", "room-on-ssd"]
    assert settings.ian.destinations == ["RIS"]


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_one_router_pod_at_most_runs_the_retention_policies_on_their_schedule(
    values: Path,
) -> None:
    scheduled = []
    for doc in documents(values):
        if doc["kind"] != "Deployment":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if container["args"] != ["run", "router"]:
            continue
        env = {e["name"]: e.get("value") for e in container["env"]}
        if env["MICROPACS_RETENTION__SCHEDULED"] == "true":
            scheduled.append((doc["metadata"]["name"], doc["spec"]["replicas"]))
    with_policies = "retentionPolicies" in (yaml.safe_load(values.read_text()) or {}).get(
        "router", {}
    )
    assert scheduled == ([("site-micropacs-router-retention", 1)] if with_policies else [])


def test_compose_runs_the_router_with_the_services_users_and_prometheus_scrapes_it() -> None:
    services: dict[str, Any] = compose()["services"]
    router = services["router"]
    assert router["command"] == ["run", "router"]
    assert router["ports"] == ["127.0.0.1:11115:11112"], "Storage Commitment, on loopback"
    environment = router["environment"]
    assert "MICROPACS_S3_USER" in environment["MICROPACS_S3__ACCESS_KEY"]
    assert "${MICROPACS_MONGO_USER" in environment["MICROPACS_STORAGE__CATALOG_URL"]
    assert (
        environment["MICROPACS_STORAGE__WORKLIST_URL"]
        == (environment["MICROPACS_STORAGE__CATALOG_URL"])
    )
    assert "MICROPACS_IAN__DESTINATIONS" in environment
    targets = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    scraped = [
        t for job in targets["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert "router:8080" in scraped


def test_the_dashboard_shows_forwarding_storage_commitment_and_ian() -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in micropacs_series(target["expr"])
    }
    router = {
        "micropacs_router_queue_depth_entries",
        "micropacs_router_failing_since_seconds",
        "micropacs_router_commitment_requests_total",
        "micropacs_router_commitment_instances_total",
        "micropacs_router_commitment_reports_total",
        "micropacs_router_commitment_report_failures_total",
        "micropacs_router_commitment_pending",
        "micropacs_router_ian_sent_total",
        "micropacs_router_ian_failed_total",
        "micropacs_router_ian_abandoned_total",
        "micropacs_router_ian_pending_notices",
    }
    assert router <= used, router - used
    assert router <= exported_series(), router - exported_series()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
