"""The deployment artefacts checked with the real tools: helm lint and template for every
CI scenario, the rendered manifests against Kubernetes' schemas in strict mode,
helm-unittest, promtool on the alert rules and their tests, the lock file, the compose file
(ports on loopback only, the services' least-privilege MinIO policy tried on a real MinIO,
the worklist without object store credentials)."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from minio import Minio
from minio.credentials.providers import StaticProvider
from minio.minioadmin import MinioAdmin
from pydantic import SecretStr

from micropacs.adapters.factory import open_blob_store
from micropacs.config import S3Settings
from micropacs.errors import MicropacsError
from stack import servers
from stack.servers import STACK_HOME
from tests.integration.peers import free_port

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


def test_the_values_schema_refuses_a_catalog_url_in_plain_values() -> None:
    """The catalog URL carries the MongoDB password: only a Secret may hold it."""
    result = subprocess.run(
        [
            tool("helm"),
            "lint",
            str(CHART),
            "-f",
            str(CHART / "ci" / "default-values.yaml"),
            "--set",
            "catalog.url=mongodb://user:password@mongo:27017/pacs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "'url' not allowed" in result.stdout + result.stderr


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


def exported_series() -> set[str]:
    """The series micropacs exports: every metric name its code declares, a counter declared
    without its _total suffix counted with it (prometheus-client adds it)."""
    declared = {
        line.split('"')[1]
        for folder in ("micropacs", "services")
        for path in (ROOT / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if '"micropacs_' in line
    }
    return declared | {f"{name}_total" for name in declared}


def micropacs_series(expr: str) -> set[str]:
    """The micropacs_ series a PromQL expression reads (histograms by their name)."""
    return {
        word.split("{")[0].split("[")[0].removesuffix("_bucket")
        for word in expr.replace("(", " ").replace(")", " ").split()
        if word.startswith("micropacs_")
    }


def test_the_dashboard_queries_only_series_micropacs_exports() -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in micropacs_series(target["expr"])
    }
    assert used <= exported_series(), used - exported_series()
    # The worklist's panels (issue: MWL, MPPS, HL7, procedures without images).
    for name in (
        "micropacs_worklist_mwl_queries_total",
        "micropacs_worklist_mwl_query_seconds",
        "micropacs_worklist_mpps_total",
        "micropacs_worklist_hl7_messages_total",
        "micropacs_worklist_procedures_without_images",
        # The read barrier (read-your-writes), declared in the core, not by a service.
        "micropacs_read_barrier_total",
        "micropacs_read_barrier_seconds",
        "micropacs_read_barrier_behind_offsets",
    ):
        assert name in used, name


def test_the_alert_rules_read_only_series_micropacs_exports() -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-alerts.yaml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in micropacs_series(rule["expr"])
    }
    assert used <= exported_series(), used - exported_series()
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = (ROOT / "monitoring" / "alerts_test.yaml").read_text()
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool test"
        assert f"\n| {alert} |" in runbook, f"{alert} has no line in docs/operations.md"


def declared_metrics(path: Path) -> list[tuple[str, str]]:
    """(kind, name) of every Counter, Gauge, Histogram and Summary a module declares."""
    kinds = {"Counter", "Gauge", "Histogram", "Summary"}
    return [
        (node.func.id, node.args[0].value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in kinds
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]


@pytest.mark.parametrize(
    "module", sorted((ROOT / "services").glob("*/metrics.py")), ids=lambda p: p.parent.name
)
def test_service_metrics_are_named_after_their_service(module: Path) -> None:
    """micropacs_<service>_<noun>_<unit>, a counter declared with its _total, as the
    dashboards and alert rules read them."""
    declared = declared_metrics(module)
    assert declared, f"{module} declares no metric"
    prefix = f"micropacs_{module.parent.name}_"
    for kind, name in declared:
        assert name.startswith(prefix), f"{name} is not named {prefix}<noun>_<unit>"
        assert kind != "Counter" or name.endswith("_total"), f"counter {name} without _total"


def test_the_lock_file_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text().lower()
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0].lower()
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
    for name in ("ingest", "index", "qr", "worklist", "router"):
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


COMPOSE = ROOT / "docker-compose.yml"
SERVICES = ("ingest", "index", "qr", "router")
"""The services that keep, send or move objects (the worklist keeps none)."""
ROOT_VARIABLES = {
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MONGO_ROOT_USER",
    "MONGO_ROOT_PASSWORD",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def variables(text: str) -> set[str]:
    """The ${NAME…} a piece of compose interpolates."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", text))


def test_compose_publishes_every_port_on_loopback_only() -> None:
    published: dict[str, list[str]] = {}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            # Short syntax HOST_IP:HOST_PORT:CONTAINER_PORT, or the long one with host_ip.
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.rsplit(":", 2)[0]
            assert isinstance(port, dict) or port.count(":") == 2, f"{name}: {port}"
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.setdefault(name, []).append(str(port))
    # DICOM (Storage Commitment with the router), DICOMweb, HL7, the web UI, Prometheus and
    # Grafana stay reachable from the machine itself.
    assert set(published) == {
        "ingest",
        "qr",
        "worklist",
        "admin",
        "router",
        "prometheus",
        "grafana",
    }, published
    assert "127.0.0.1:2575:2575" in published["worklist"], "the RIS sends HL7 to 2575"


def test_compose_runs_the_worklist_listening_for_hl7_with_the_database_user_only() -> None:
    services = compose()["services"]
    worklist = services["worklist"]
    assert worklist["command"] == ["run", "worklist"]
    environment = worklist["environment"]
    # The listener's default is loopback, which no one outside the container reaches.
    assert environment["MICROPACS_WORKLIST__HL7_HOST"] == "0.0.0.0"
    assert environment["MICROPACS_WORKLIST__HL7_PORT"] == "2575"
    url = environment["MICROPACS_STORAGE__CATALOG_URL"]
    assert "${MICROPACS_MONGO_USER" in url and "authSource=micropacs" in url
    assert environment["MICROPACS_STORAGE__WORKLIST_URL"] == url
    # No object store: neither its credentials nor a wait for its bucket.
    assert not any(key.startswith("MICROPACS_S3__") for key in environment)
    assert "MICROPACS_S3" not in yaml.safe_dump(worklist)
    assert set(worklist["depends_on"]) == {"kafka", "mongo-init"}
    # The index applies the worklist's events to the same store.
    assert services["index"]["environment"]["MICROPACS_STORAGE__WORKLIST_URL"] == url
    targets = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    scraped = [
        t for job in targets["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert "worklist:8080" in scraped


def test_compose_runs_the_services_with_their_own_least_privilege_users() -> None:
    services = compose()["services"]
    for name in SERVICES:
        environment = services[name]["environment"]
        used = variables(yaml.safe_dump(services[name]))
        assert not used & ROOT_VARIABLES, f"{name} is given {used & ROOT_VARIABLES}"
        assert "MICROPACS_S3_USER" in environment["MICROPACS_S3__ACCESS_KEY"]
        assert "MICROPACS_S3_PASSWORD" in environment["MICROPACS_S3__SECRET_KEY"]
        url = environment["MICROPACS_STORAGE__CATALOG_URL"]
        assert "${MICROPACS_MONGO_USER" in url and "@mongo:27017/micropacs?" in url
        assert "authSource=micropacs" in url, "the user lives in the micropacs database"
        assert services[name]["depends_on"]["minio-init"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["depends_on"]["mongo-init"]["condition"] == (
            "service_completed_successfully"
        )
    # The root users serve only the servers themselves and the steps that create the users.
    for name, service in services.items():
        if variables(yaml.safe_dump(service)) & ROOT_VARIABLES:
            assert name in {"minio", "minio-init", "mongo", "mongo-init"}, name
    # The services' users are not the root users, even with every default taken.
    defaults = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]+)\}", COMPOSE.read_text()))
    assert defaults["MICROPACS_S3_USER"] != defaults["MINIO_ROOT_USER"]
    assert defaults["MICROPACS_MONGO_USER"] != defaults["MONGO_ROOT_USER"]


def test_compose_creates_the_mongodb_user_with_read_write_on_micropacs_only() -> None:
    loaded = compose()
    script = loaded["configs"]["mongo-services-user"]["content"]
    assert 'const roles = [{ role: "readWrite", db: "micropacs" }];' in script
    assert script.count("roles: roles") == 2 and 'getSiblingDB("micropacs")' in script
    assert not re.search(r"root|dbOwner|userAdmin|AnyDatabase|clusterAdmin", script)
    init = loaded["services"]["mongo-init"]
    assert init["image"] == loaded["services"]["mongo"]["image"]
    assert init["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    assert "/etc/micropacs/mongo-services-user.js" in init["command"][0]


def test_compose_secrets_must_be_set_and_env_example_names_them_all() -> None:
    text = COMPOSE.read_text()
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in variables(text):
        if "PASSWORD" in name:
            assert re.search(rf"\$\{{{name}:\?", text), f"{name} needs ${{{name}:?…}}"
        if name != "MICROPACS_IMAGE":
            assert name in example, f"{name} is not in .env.example"
    passwords = [value for name, value in example.items() if "PASSWORD" in name]
    assert len(passwords) == len(set(passwords)), "one password per user"


def start_minio(run_dir: Path) -> servers.Ports:
    if not (STACK_HOME / "bin" / "minio").exists():
        pytest.skip("MinIO is not installed: run stack/install.sh (make stack)")
    ports = servers.Ports(minio=free_port())
    servers.start_minio(run_dir, ports)
    deadline = time.monotonic() + 60
    while True:
        try:
            url = f"http://127.0.0.1:{ports.minio}/minio/health/cluster"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return ports
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_the_compose_minio_policy_limits_the_services_to_their_bucket(tmp_path: Path) -> None:
    """What minio-init does, with the policy of docker-compose.yml, on a real MinIO: the
    services' user can do everything ingest, index and qr do in micropacs-default, through
    micropacs' own S3 adapter, and nothing else."""
    policy = compose()["configs"]["minio-services-policy"]["content"]
    ports = start_minio(tmp_path)
    try:
        endpoint = f"127.0.0.1:{ports.minio}"
        root = StaticProvider(servers.MINIO_USER, servers.MINIO_PASSWORD)
        as_root = Minio(endpoint, credentials=root, secure=False)
        admin = MinioAdmin(endpoint=endpoint, credentials=root, secure=False)
        as_root.make_bucket("micropacs-default")
        as_root.make_bucket("another-archive")
        as_root.put_object("another-archive", "secret.dcm", io.BytesIO(b"other"), 5)
        (tmp_path / "policy.json").write_text(policy)
        admin.policy_add("micropacs-services", str(tmp_path / "policy.json"))
        admin.user_add("micropacs-services", "services-password")
        admin.attach_policy(["micropacs-services"], user="micropacs-services")

        settings = S3Settings(
            access_key="micropacs-services",
            secret_key=SecretStr("services-password"),
        )

        async def as_the_services() -> None:
            blobs = await open_blob_store(f"s3://{endpoint}/micropacs", fsync=False, s3=settings)
            key = "default/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
            await blobs.put(key, io.BytesIO(b"DICM" * 100), 400)
            info = await blobs.stat(key)
            assert info is not None and info.size == 400
            assert b"".join([chunk async for chunk in blobs.read(key)]) == b"DICM" * 100
            assert [k async for k in blobs.iterate("default/")] == [key]
            await blobs.delete(key)
            assert await blobs.stat(key) is None
            with pytest.raises(MicropacsError, match="AccessDenied"):
                await blobs.put("newgroup/1.2/1.2.3/1.2.3.4.dcm", io.BytesIO(b"x"), 1)
            await blobs.close()

        asyncio.run(as_the_services())
        services = StaticProvider("micropacs-services", "services-password")
        as_services = Minio(endpoint, credentials=services, secure=False)
        with pytest.raises(Exception, match="Access Denied"):
            as_services.get_object("another-archive", "secret.dcm")
        with pytest.raises(Exception, match="Access Denied"):
            as_services.put_object("another-archive", "mine.dcm", io.BytesIO(b"x"), 1)
        with pytest.raises(Exception, match="Access Denied"):
            as_services.remove_bucket("micropacs-default")
        assert not as_root.bucket_exists("micropacs-newgroup")
        with pytest.raises(Exception, match=r"(?i)access denied"):
            MinioAdmin(endpoint=endpoint, credentials=services, secure=False).user_list()
    finally:
        servers.stop_one(tmp_path, "minio")


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
