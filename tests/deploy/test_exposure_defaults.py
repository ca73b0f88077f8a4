"""The chart and compose start under the checks that refuse an open port: each service's
settings, as the image, compose or the rendered chart give them, pass the checks its
process makes before it listens."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from micropacs.config import Settings
from micropacs.exposure import require_dicom_access
from services.worklist.hl7_access import require_hl7_access
from tests.deploy.test_artifacts import SCENARIOS, render

ROOT = Path(__file__).resolve().parents[2]
DICOM_SERVICES = ("ingest", "qr", "worklist", "router")


def image_environment() -> dict[str, str]:
    """The ``MICROPACS_`` variables the image's Dockerfile sets."""
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"\b(MICROPACS_[A-Z0-9_]+)=(\S+)", text))


def interpolated(value: object) -> str:
    """A compose value with each ``${NAME:-default}`` as its default, ``${NAME:?…}`` as set."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", "set", text)


def settings_of(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [name for name in os.environ if name.startswith("MICROPACS_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


def compose_services() -> Iterator[tuple[str, dict[str, str]]]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in DICOM_SERVICES:
        environment = loaded["services"][name].get("environment", {})
        yield name, {key: interpolated(value) for key, value in environment.items()}


@pytest.mark.parametrize(("service", "environment"), list(compose_services()))
def test_compose_services_pass_the_open_port_checks(
    service: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of({**image_environment(), **environment}, monkeypatch)
    assert settings.dicom.host == "0.0.0.0"  # the image's: the check applies
    require_dicom_access(settings.dicom)
    if service == "worklist":
        assert settings.worklist.hl7_host == "0.0.0.0"
        require_hl7_access(settings.worklist)


def chart_environments(values: Path) -> Iterator[tuple[str, dict[str, str]]]:
    documents = [doc for doc in yaml.safe_load_all(render(values)) if doc]
    config = next(doc["data"] for doc in documents if doc["kind"] == "ConfigMap")
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        service = container["args"][-1]
        own = {env["name"]: str(env["value"]) for env in container["env"] if "value" in env}
        yield service, {**image_environment(), **config, **own}


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_chart_services_pass_the_open_port_checks(
    values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    for service, environment in chart_environments(values):
        settings = settings_of(environment, monkeypatch)
        if service in DICOM_SERVICES:
            require_dicom_access(settings.dicom)
        if service == "worklist":
            assert settings.worklist.hl7_host == "0.0.0.0"
            require_hl7_access(settings.worklist)
        checked.append(service)
    assert set(DICOM_SERVICES) <= set(checked)
