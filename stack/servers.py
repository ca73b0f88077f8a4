"""Start and stop the real servers of the hospital deployment on loopback.

Each server runs from the binaries ``stack/install.sh`` cached, in its own
session, with its PID in the run directory, and is stopped by that PID:

    python -m stack.servers up [RUN_DIR]      # start what is not running, wait until ready
    python -m stack.servers down [RUN_DIR]    # stop all
    python -m stack.servers env [RUN_DIR]     # print the MICROPACS_ variables pointing at them

Tests start a stack of their own in a fresh directory with :func:`up`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from stack import certs

STACK_HOME = Path(os.environ.get("MICROPACS_STACK_HOME", Path.home() / ".cache/micropacs-stack"))
KAFKA_VERSION = "4.3.1"
FERRETDB_SOURCE = Path(__file__).resolve().parent.parent / "tools/ferretdb/main.go"
MINIO_USER = "micropacs"
MINIO_PASSWORD = "micropacs-secret"
KAFKA_USER = "micropacs"
KAFKA_PASSWORD = "micropacs-kafka-secret"
"""The SASL user of Kafka's SASL_SSL listener, for PLAIN and SCRAM-SHA-256/512 alike."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one stack."""

    kafka: int = 19092
    kafka_controller: int = 19093
    minio: int = 19000
    ferretdb: int = 27018
    prometheus: int = 19090
    kafka_sasl_ssl: int = 19094
    """Kafka's SASL_SSL listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 as KAFKA_USER)."""
    kafka_ssl: int = 19095
    """Kafka's SSL listener, which requires a client certificate of the stack's CA."""
    ferretdb_tls: int = 27019
    """FerretDB's TLS listener."""

    @classmethod
    def picked_by(cls, free_port: Callable[[], int]) -> Ports:
        """Every port from ``free_port``: a stack of its own beside any other."""
        return cls(**{field.name: free_port() for field in fields(cls)})


@dataclass(frozen=True)
class Stack:
    """A running stack: where it lives and where it listens."""

    run_dir: Path
    ports: Ports

    @property
    def env(self) -> dict[str, str]:
        """The MICROPACS_ variables that point services at this stack."""
        return {
            "MICROPACS_STORAGE__BLOB_URL": f"s3://127.0.0.1:{self.ports.minio}/micropacs",
            "MICROPACS_S3__ACCESS_KEY": MINIO_USER,
            "MICROPACS_S3__SECRET_KEY": MINIO_PASSWORD,
            "MICROPACS_STORAGE__BUS_URL": f"kafka://127.0.0.1:{self.ports.kafka}",
            "MICROPACS_STORAGE__CATALOG_URL": f"mongodb://127.0.0.1:{self.ports.ferretdb}/micropacs",
        }

    @property
    def pki(self) -> certs.Pki:
        """The CA and certificates of the stack's TLS listeners."""
        return certs.Pki(self.run_dir / "tls")

    @property
    def tls_env(self) -> dict[str, str]:
        """:attr:`env` with Kafka over SASL_SSL (SCRAM-SHA-512) and the catalog over TLS."""
        ca = str(self.pki.ca)
        return {
            **self.env,
            "MICROPACS_STORAGE__BUS_URL": f"kafka://127.0.0.1:{self.ports.kafka_sasl_ssl}",
            "MICROPACS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "MICROPACS_KAFKA__CA_FILE": ca,
            "MICROPACS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "MICROPACS_KAFKA__SASL_USERNAME": KAFKA_USER,
            "MICROPACS_KAFKA__SASL_PASSWORD": KAFKA_PASSWORD,
            "MICROPACS_STORAGE__CATALOG_URL": f"mongodb://127.0.0.1:{self.ports.ferretdb_tls}"
            f"/micropacs?tls=true&tlsCAFile={ca}",
        }


def available() -> str | None:
    """Why the stack cannot start here, or None when every binary is installed."""
    missing = [
        name
        for name, path in {
            "Kafka jars": STACK_HOME / f"kafka-{KAFKA_VERSION}/libs/.complete",
            "MinIO": STACK_HOME / "bin/minio",
            "FerretDB": STACK_HOME / "bin/ferretdb",
        }.items()
        if not path.exists()
    ]
    if missing:
        return f"{', '.join(missing)} not installed: run stack/install.sh (or make stack-up)"
    ferretdb = STACK_HOME / "bin/ferretdb"
    if ferretdb.stat().st_mtime < FERRETDB_SOURCE.stat().st_mtime:
        return "FerretDB is older than tools/ferretdb (its TLS flags): run stack/install.sh"
    return None


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started, so stopping one also reaps it (no zombie, no warning)."""


START_MARK = b"--- micropacs stack: starting "
"""Written to a server's log before each start, so readiness is read from this start only."""


def _start(run_dir: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
    with (run_dir / f"{name}.log").open("ab") as log:
        log.write(START_MARK + name.encode() + b" ---\n")
        log.flush()
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=run_dir,
        )
    _CHILDREN[process.pid] = process
    (run_dir / f"{name}.pid").write_text(str(process.pid))


def _wait(what: str, ready: object, timeout: float, run_dir: Path, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if callable(ready) and ready():
                return
        except OSError:
            pass
        pid = int((run_dir / f"{name}.pid").read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tail = (run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited during start-up:\n{tail}") from None
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s; see {run_dir / (name + '.log')}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return bool(answer.status == 200)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def start_kafka(run_dir: Path, ports: Ports) -> None:
    """A single KRaft broker+controller (STACK.md §1)."""
    libs = STACK_HOME / f"kafka-{KAFKA_VERSION}/libs"
    data = run_dir / "kafka-data"
    props = run_dir / "kafka.properties"
    pki = certs.make_pki(run_dir / "tls")
    listeners = ",".join(
        [
            f"PLAINTEXT://127.0.0.1:{ports.kafka}",
            f"CONTROLLER://127.0.0.1:{ports.kafka_controller}",
            f"SASL_SSL://127.0.0.1:{ports.kafka_sasl_ssl}",
            f"SSL://127.0.0.1:{ports.kafka_ssl}",
        ]
    )
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{ports.kafka_controller}",
                f"listeners={listeners}",
                f"advertised.listeners={listeners}",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                "SASL_SSL:SASL_SSL,SSL:SSL",
                *_kafka_tls_properties(pki),
                f"log.dirs={data}",
                "auto.create.topics.enable=false",
                "num.partitions=4",
                "default.replication.factor=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "share.coordinator.state.topic.num.partitions=1",
                "group.initial.rebalance.delay.ms=0",
                "num.network.threads=2",
                "num.io.threads=2",
                "num.recovery.threads.per.data.dir=1",
                "log.cleaner.dedupe.buffer.size=33554432",
                "",
            ]
        )
    )
    log4j = run_dir / "log4j2.properties"
    log4j.write_text(
        "status = warn\nappender.out.type = Console\nappender.out.name = STDOUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = STDOUT\n"
    )
    classpath = f"{libs}/*"
    java = ["java", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
    if not (data / "meta.properties").exists():
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").lstrip("-")
        subprocess.run(
            [
                *java[:1],
                "-Xmx256m",
                *java[1:],
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                cluster,
                # SCRAM credentials live in the cluster metadata: written at format, no
                # second JVM (kafka-configs) at every start.
                "--add-scram",
                f"SCRAM-SHA-256=[name={KAFKA_USER},password={KAFKA_PASSWORD}]",
                "--add-scram",
                f"SCRAM-SHA-512=[name={KAFKA_USER},password={KAFKA_PASSWORD}]",
                "--config",
                str(props),
            ],
            check=True,
            capture_output=True,
            cwd=run_dir,
        )
    _start(
        run_dir,
        "kafka",
        [
            *java[:1],
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={run_dir / 'kafka-logs'}",
            *java[1:],
            "kafka.Kafka",
            str(props),
        ],
    )


def _kafka_tls_properties(pki: certs.Pki) -> list[str]:
    """The SASL_SSL and SSL listeners' properties: PEM key and trust stores, SASL users.

    The PLAINTEXT listener the other tests use is left as it was; brokers and the
    controller keep talking PLAINTEXT to each other.
    """
    plain_users = f'user_{KAFKA_USER}="{KAFKA_PASSWORD}"'
    return [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={pki.server_pem}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={pki.ca}",
        "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
        "listener.name.ssl.ssl.client.auth=required",
        "listener.name.sasl_ssl.ssl.client.auth=none",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]


def start_minio(run_dir: Path, ports: Ports) -> None:
    """A single-drive MinIO on loopback (STACK.md §2.3)."""
    data = run_dir / "minio-data"
    data.mkdir(exist_ok=True)
    _start(
        run_dir,
        "minio",
        [
            str(STACK_HOME / "bin/minio"),
            "server",
            "--quiet",
            "--address",
            f"127.0.0.1:{ports.minio}",
            str(data),
        ],
        env={
            "MINIO_ROOT_USER": MINIO_USER,
            "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        },
    )


def start_ferretdb(run_dir: Path, ports: Ports) -> None:
    """FerretDB v1 on its SQLite backend (STACK.md §3.3), plain and TLS on two ports."""
    data = run_dir / "ferretdb-data"
    data.mkdir(exist_ok=True)
    pki = certs.make_pki(run_dir / "tls")
    _start(
        run_dir,
        "ferretdb",
        [
            str(STACK_HOME / "bin/ferretdb"),
            f"--listen-addr=127.0.0.1:{ports.ferretdb}",
            f"--sqlite-url=file:{data}/",
            f"--listen-tls=127.0.0.1:{ports.ferretdb_tls}",
            f"--listen-tls-cert-file={pki.server_cert}",
            f"--listen-tls-key-file={pki.server_key}",
        ],
    )


ALERT_RULES = (
    Path(__file__).resolve().parent.parent / "charts/micropacs/files/prometheus-alerts.yaml"
)
"""The alert rules the chart ships, loaded by the stack's Prometheus too."""

SCRAPE_TARGETS = ("127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083")
"""The HTTP ports of ``make run`` and ``make run-stack``'s services."""


def start_prometheus(
    run_dir: Path, ports: Ports, targets: tuple[str, ...] = SCRAPE_TARGETS
) -> None:
    """Debian's Prometheus scraping the micropacs services every 5 s, with our alert rules."""
    config = run_dir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 5s, evaluation_interval: 5s}\n"
        f"rule_files: [{json.dumps(str(ALERT_RULES))}]\n"
        "scrape_configs:\n"
        "  - job_name: micropacs\n"
        f"    static_configs: [{{targets: {json.dumps(list(targets))}}}]\n"
    )
    (run_dir / "prometheus-data").mkdir(exist_ok=True)
    _start(
        run_dir,
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{ports.prometheus}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
    )


SERVERS = ("minio", "ferretdb", "kafka", "prometheus")
"""The servers of a stack, by the names of their PID and log files."""


def _ports_of(name: str, ports: Ports) -> tuple[int, ...]:
    if name == "kafka":
        return (ports.kafka, ports.kafka_controller, ports.kafka_sasl_ssl, ports.kafka_ssl)
    if name == "ferretdb":
        return (ports.ferretdb, ports.ferretdb_tls)
    return (int(getattr(ports, name)),)


def _taken(port: int) -> bool:
    try:
        return _listening(port)
    except OSError:
        return False


def running(run_dir: Path) -> list[str]:
    """The servers of ``run_dir`` whose PID file names a live process of this stack.

    A PID file outlives a reboot or a SIGKILL and its number may be reused, so the
    process counts only if its command line names ``run_dir`` (every server's does:
    its data or configuration lives there). A stale PID file is removed.
    """
    alive = []
    for name in SERVERS:
        pid_file = run_dir / f"{name}.pid"
        try:
            pid = int(pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            pid_file.unlink(missing_ok=True)
            continue
        except ValueError:
            pid_file.unlink()
            continue
        if str(run_dir).encode() in command:
            alive.append(name)
        else:
            pid_file.unlink()
    return alive


def _started_since_last_mark(log_file: Path, needle: bytes) -> bool:
    with log_file.open("rb") as log:
        text = log.read()
    return needle in text[max(text.rfind(START_MARK), 0) :]


def up(run_dir: Path, ports: Ports | None = None, timeout: float = 120) -> Stack:
    """Start what is missing of Kafka, MinIO, FerretDB (and Prometheus, if installed) in
    ``run_dir`` and wait until each is ready.

    Servers already running there (see :func:`running`) are left alone, so a second
    ``up`` on a running stack only checks it: a second broker on the same log
    directory would unsettle the first one's KRaft controller.
    """
    reason = available()
    if reason:
        raise RuntimeError(reason)
    ports = ports or Ports()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in SERVERS if name != "prometheus" or shutil.which("prometheus")]
    already = running(run_dir)
    recorded = run_dir / "stack.json"
    if already and recorded.exists():
        before = Ports(**json.loads(recorded.read_text())["ports"])
        if before != ports:
            raise RuntimeError(
                f"the stack in {run_dir} runs on {before}, not {ports}: stop it first"
            )
    missing = [name for name in wanted if name not in already]
    for name in missing:
        taken = [port for port in _ports_of(name, ports) if _taken(port)]
        if taken:
            raise RuntimeError(f"{name}: port {taken[0]} is taken by a process not of {run_dir}")
    starters = {
        "minio": start_minio,
        "ferretdb": start_ferretdb,
        "kafka": start_kafka,
        "prometheus": start_prometheus,
    }
    for name in missing:
        starters[name](run_dir, ports)
    if "prometheus" in wanted:
        _wait(
            "Prometheus",
            lambda: _http_ok(f"http://127.0.0.1:{ports.prometheus}/-/ready"),
            timeout,
            run_dir,
            "prometheus",
        )
    _wait(
        "MinIO",
        lambda: _http_ok(f"http://127.0.0.1:{ports.minio}/minio/health/cluster"),
        timeout,
        run_dir,
        "minio",
    )
    _wait(
        "FerretDB",
        lambda: _listening(ports.ferretdb) and _listening(ports.ferretdb_tls),
        timeout,
        run_dir,
        "ferretdb",
    )

    def kafka_started() -> bool:
        return _started_since_last_mark(run_dir / "kafka.log", b"Kafka Server started") and all(
            _listening(port) for port in (ports.kafka, ports.kafka_sasl_ssl, ports.kafka_ssl)
        )

    _wait("Kafka", kafka_started, timeout, run_dir, "kafka")
    stack = Stack(run_dir=run_dir, ports=ports)
    recorded.write_text(json.dumps({"ports": asdict(ports)}))
    return stack


def stop_one(run_dir: Path, name: str, timeout: float = 30) -> None:
    """Stop one server by its PID (SIGTERM, then SIGKILL)."""
    pid_file = run_dir / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        pid_file.unlink(missing_ok=True)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def down(run_dir: Path) -> None:
    """Stop every server of the stack in ``run_dir``."""
    for name in ("kafka", "ferretdb", "minio", "prometheus"):
        stop_one(run_dir, name)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    run_dir = Path(argv[1]) if len(argv) > 1 else STACK_HOME / "run"
    if command == "up":
        already = running(run_dir.resolve())
        if already:
            print(f"already running in {run_dir}: {', '.join(already)}", file=sys.stderr)
        stack = up(run_dir)
        for key, value in stack.env.items():
            print(f"export {key}={value}")
        return 0
    if command == "down":
        down(run_dir)
        return 0
    if command == "env":
        for key, value in Stack(run_dir, Ports()).env.items():
            print(f"export {key}={value}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
