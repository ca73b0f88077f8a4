"""The deployment artefacts checked with the real tools: helm lint and template for every
CI scenario, the rendered manifests against Kubernetes' schemas in strict mode,
helm-unittest, promtool on the alert rules and their tests, the lock file, the compose file."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from stack.servers import STACK_HOME

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "micropacs"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES = "1.33.0"


def tool(name: str) -> str:
    found = STACK_HOME / "bin" / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.skip(f"{name} is not installed: run stack/install.sh (make stack)")
    return on_path


def run(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=stdin, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(values: Path, *extra: str) -> str:
    return run(
        tool("helm"),
        "template",
        "site",
        str(CHART),
        "-f",
        str(values),
        "--kube-version",
        KUBERNETES,
        *extra,
    )


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_chart_lints_and_renders_valid_manifests(values: Path) -> None:
    run(tool("helm"), "lint", "--strict", str(CHART), "-f", str(values))
    manifests = render(values)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(manifests) if doc}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    validate = ROOT / ".venv" / "bin" / "kubernetes-validate"
    command = str(validate) if validate.exists() else tool("kubernetes-validate")
    output = run(command, "-k", KUBERNETES, "--strict", "-", stdin=manifests)
    assert "error" not in output.lower()


def test_the_values_schema_refuses_a_bad_site() -> None:
    result = subprocess.run(
        [
            tool("helm"),
            "lint",
            str(CHART),
            "-f",
            str(CHART / "ci" / "default-values.yaml"),
            "--set",
            "site.aeTitle=AN_AE_TITLE_FAR_TOO_LONG",
            "--set",
            "site.compression=zip",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "aeTitle" in result.stdout + result.stderr


def test_helm_unittest_suites_pass() -> None:
    output = run(tool("helm-unittest"), str(CHART))
    assert "Tests:" in output and "failed" not in output.split("Tests:")[1].split("\n")[0]


def test_alert_rules_are_valid_and_their_tests_pass() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "rules", str(CHART / "files" / "prometheus-alerts.yaml"))
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=ROOT / "monitoring",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    # In the container the rules are mounted at /etc/prometheus; point at the repo's copy.
    config["rule_files"] = [str(CHART / "files" / "prometheus-alerts.yaml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))


def test_the_dashboard_queries_only_series_micropacs_exports() -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    exported = {
        line.split('"')[1]
        for path in (ROOT / "micropacs").rglob("*.py")
        for line in path.read_text().splitlines()
        if '"micropacs_' in line
    } | {
        line.split('"')[1]
        for path in (ROOT / "services").rglob("*.py")
        for line in path.read_text().splitlines()
        if '"micropacs_' in line
    }
    used = {
        word.split("{")[0].split("[")[0].removesuffix("_bucket")
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for word in target["expr"].replace("(", " ").replace(")", " ").split()
        if word.startswith("micropacs_")
    }
    assert used <= exported, used - exported


def test_the_lock_file_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text().lower()
    for requirement in project["dependencies"]:
        name = requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert f"\n{name}==" in lock, f"{name} is not in requirements.lock: re-run pip-compile"
    assert "--hash=sha256:" in lock


def test_the_image_runs_as_non_root_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: no build tools in the final image"
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "USER 10001" in final and "HEALTHCHECK" in final
    assert "--require-hashes" in dockerfile


def test_compose_file_uses_upstream_images_and_health_gates() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    images = {s.get("image", "").split(":")[0] for s in services.values()}
    assert {"apache/kafka", "minio/minio", "mongo", "prom/prometheus", "grafana/grafana"} <= images
    assert not any("bitnami" in image for image in images)
    for name in ("ingest", "index", "qr"):
        gates = services[name]["depends_on"]
        assert all(
            gate["condition"] in ("service_healthy", "service_completed_successfully")
            for gate in gates.values()
        ), name
        assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        # `docker compose config` needs only the compose plugin, no engine.
        compose_file, env_file = str(ROOT / "docker-compose.yml"), str(ROOT / ".env.example")
        run(docker, "compose", "--env-file", env_file, "-f", compose_file, "config", "-q")


@pytest.mark.slow
def test_the_image_environment_installs_from_the_lock_alone(tmp_path: Path) -> None:
    """What the Dockerfile's build stage does, without a container engine: a fresh venv,
    the hashed locks with --no-deps, then micropacs itself; pip check finds nothing missing."""
    import sys

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = str(venv / "bin" / "pip")
    for lock in ("requirements-build.lock", "requirements.lock"):
        run(pip, "install", "-q", "--require-hashes", "--no-deps", "-r", str(ROOT / lock))
    run(pip, "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT))
    run(pip, "check")
    assert "serve" in run(str(venv / "bin" / "micropacs"), "--help")
