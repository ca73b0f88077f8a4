"""Start and stop the real servers of the hospital deployment on loopback.

Each server runs from the binaries ``stack/install.sh`` cached, in its own
session, with its PID in the run directory, and is stopped by that PID:

    python -m stack.servers up [RUN_DIR]      # start what is not running, wait until ready
    python -m stack.servers down [RUN_DIR]    # stop all
    python -m stack.servers env [RUN_DIR]     # print the MICROPACS_ variables pointing at them

Tests start a stack of their own in a fresh directory with :func:`up`.

FerretDB keeps the catalog in SQLite files, or in a PostgreSQL server of the
stack's own (Debian's) when ``MICROPACS_STACK_CATALOG_BACKEND=postgresql``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
CATALOG_BACKENDS = ("sqlite", "postgresql")
POSTGRESQL_USER = "postgres"
"""The OS user PostgreSQL runs as (it refuses root) and its superuser, trusted on loopback."""


def catalog_backend() -> str:
    """FerretDB's backend: ``MICROPACS_STACK_CATALOG_BACKEND`` (sqlite, the default, or
    postgresql)."""
    backend = os.environ.get("MICROPACS_STACK_CATALOG_BACKEND", "sqlite")
    if backend not in CATALOG_BACKENDS:
        raise RuntimeError(
            f"MICROPACS_STACK_CATALOG_BACKEND={backend!r}: expected one of {CATALOG_BACKENDS}"
        )
    return backend


def postgresql_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL Debian installed, or None."""
    found = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
        if (path.parent / "initdb").exists() and path.parent.parent.name.isdigit()
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None)


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
    postgresql: int = 15432
    """PostgreSQL under FerretDB, when the catalog backend is postgresql."""

    @classmethod
    def picked_by(cls, free_port: Callable[[], int]) -> Ports:
        """Every port from ``free_port``: a stack of its own beside any other."""
        return cls(**{field.name: free_port() for field in fields(cls)})


@dataclass(frozen=True)
class Stack:
    """A running stack: where it lives and where it listens."""

    run_dir: Path
    ports: Ports
    catalog_backend: str = "sqlite"
    """FerretDB's backend: sqlite or postgresql."""

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


def available(backend: str | None = None) -> str | None:
    """Why the stack cannot start here, or None when every binary is installed.

    ``backend`` is FerretDB's (default: :func:`catalog_backend`).
    """
    if (backend or catalog_backend()) == "postgresql" and postgresql_bin() is None:
        return "PostgreSQL not installed: run stack/install.sh"
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


def _start(
    run_dir: Path,
    name: str,
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    with (run_dir / f"{name}.log").open("ab") as log:
        log.write(START_MARK + name.encode() + b" ---\n")
        log.flush()
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=cwd or run_dir,
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


def postgresql_home(run_dir: Path) -> Path:
    """Where the PostgreSQL of the stack in ``run_dir`` keeps its cluster.

    Not in ``run_dir`` itself: PostgreSQL runs as its own user, who may not enter
    the directories above it (root's home, pytest's temporary directories), so the
    cluster lives in a directory of the system's temporary one named after
    ``run_dir``, found again by the next ``up`` there.
    """
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "micropacs-postgresql" / digest


def _as_postgres() -> list[str]:
    # setpriv execs the program itself, so the PID we record is the postmaster's.
    return ["setpriv", f"--reuid={POSTGRESQL_USER}", f"--regid={POSTGRESQL_USER}", "--init-groups"]


def _prune_postgresql_homes(keep: Path) -> None:
    """Remove the clusters of stacks whose run directory is gone and that no longer run."""
    for home in keep.parent.iterdir():
        owner = home / "run_dir"
        if home == keep or not owner.exists() or Path(owner.read_text()).exists():
            continue
        pid_file = home / "data/postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            continue  # still running: its stack will stop it
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(home, ignore_errors=True)


def start_postgresql(run_dir: Path, ports: Ports) -> None:
    """Debian's PostgreSQL, as its own user, on loopback only, trusting every local login.

    Commits are asynchronous (``synchronous_commit=off``), as MongoDB's journal is
    flushed every 100 ms rather than at each write.
    """
    bin_dir = postgresql_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL not installed: run stack/install.sh")
    home = postgresql_home(run_dir)
    home.parent.mkdir(mode=0o1777, exist_ok=True)
    _prune_postgresql_homes(home)
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o700)
        (home / "run_dir").write_text(str(run_dir))
        shutil.chown(home, POSTGRESQL_USER, POSTGRESQL_USER)
        subprocess.run(
            [
                *_as_postgres(),
                str(bin_dir / "initdb"),
                f"--pgdata={data}",
                f"--username={POSTGRESQL_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=home,
        )
    _start(
        run_dir,
        "postgresql",
        [
            *_as_postgres(),
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={ports.postgresql}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ],
        cwd=home,
    )


GIN_TWINS = r"""
CREATE OR REPLACE FUNCTION micropacs_gin_twins() RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT n.nspname AS schema, t.relname AS tbl, left(i.relname, 59) || '_gin' AS twin,
           pg_get_indexdef(x.indexrelid, 1, true) AS expr
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_am a ON a.oid = i.relam
    WHERE a.amname = 'btree' AND x.indnatts = 1
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND t.relname NOT LIKE '\_ferretdb\_%'
      AND pg_get_indexdef(x.indexrelid, 1, true) ~ '^\(_jsonb -> ''[^'']+''::text\)$'
      AND NOT EXISTS (
        SELECT 1 FROM pg_class g
        WHERE g.relnamespace = n.oid AND g.relname = left(i.relname, 59) || '_gin')
  LOOP
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((%s) jsonb_path_ops)',
                   r.twin, r.schema, r.tbl, r.expr);
  END LOOP;
END $$;
CREATE OR REPLACE FUNCTION micropacs_gin_twins_after() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('micropacs.making_twins', true) = 'on' THEN RETURN; END IF;
  PERFORM set_config('micropacs.making_twins', 'on', true);
  PERFORM micropacs_gin_twins();
  PERFORM set_config('micropacs.making_twins', 'off', true);
END $$;
DROP EVENT TRIGGER IF EXISTS micropacs_gin_twins;
CREATE EVENT TRIGGER micropacs_gin_twins ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION micropacs_gin_twins_after();
SELECT micropacs_gin_twins();
"""
"""A GIN twin of every single-field index FerretDB creates, made as it creates it.

FerretDB 1.24 indexes a field as a btree on ``_jsonb -> 'field'``, but pushes an
equality down as ``_jsonb -> 'field' @> value``, which only a GIN index serves: without
the twins every query, even by ``_id``, is a sequential scan, which MongoDB's own
indexes would never be. (PostgreSQL runs an event trigger in the transaction of the
command that fired it, so the twin exists when ``createIndexes`` answers.)
"""


def _install_gin_twins(ports: Ports) -> None:
    bin_dir = postgresql_bin()
    assert bin_dir is not None
    subprocess.run(
        [
            *_as_postgres(),
            str(bin_dir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            "--host=127.0.0.1",
            f"--port={ports.postgresql}",
            f"--username={POSTGRESQL_USER}",
            "--dbname=postgres",
        ],
        input=GIN_TWINS.encode(),
        check=True,
        capture_output=True,
        cwd="/",
    )


def postgresql_url(ports: Ports) -> str:
    """The URL FerretDB reaches the stack's PostgreSQL at (its default database).

    FerretDB's pool of 50 connections is raised to 100: an update command holds one per
    statement (see micropacs.adapters._mongo_write.BULK_CHUNK), and several services'
    commands run at once.
    """
    return f"postgres://{POSTGRESQL_USER}@127.0.0.1:{ports.postgresql}/postgres?pool_max_conns=100"


def start_ferretdb(run_dir: Path, ports: Ports, backend: str = "sqlite") -> None:
    """FerretDB v1 on its SQLite or PostgreSQL backend (STACK.md §3.3), plain and TLS on
    two ports."""
    data = run_dir / "ferretdb-data"
    data.mkdir(exist_ok=True)
    pki = certs.make_pki(run_dir / "tls")
    store = (
        [f"--sqlite-url=file:{data}/"]
        if backend == "sqlite"
        else ["--handler=postgresql", f"--postgresql-url={postgresql_url(ports)}"]
    )
    _start(
        run_dir,
        "ferretdb",
        [
            str(STACK_HOME / "bin/ferretdb"),
            f"--listen-addr=127.0.0.1:{ports.ferretdb}",
            *store,
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


SERVERS = ("minio", "postgresql", "ferretdb", "kafka", "prometheus")
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
    its data or configuration lives there; PostgreSQL's names its
    :func:`postgresql_home`). A stale PID file is removed.
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
        mark = postgresql_home(run_dir) if name == "postgresql" else run_dir
        if str(mark).encode() in command:
            alive.append(name)
        else:
            pid_file.unlink()
    return alive


def _started_since_last_mark(log_file: Path, needle: bytes) -> bool:
    with log_file.open("rb") as log:
        text = log.read()
    return needle in text[max(text.rfind(START_MARK), 0) :]


def up(
    run_dir: Path, ports: Ports | None = None, timeout: float = 120, backend: str | None = None
) -> Stack:
    """Start what is missing of Kafka, MinIO, FerretDB (and PostgreSQL under it, and
    Prometheus, if installed) in ``run_dir`` and wait until each is ready.

    ``backend`` is FerretDB's (default: :func:`catalog_backend`). Servers already
    running there (see :func:`running`) are left alone, so a second ``up`` on a
    running stack only checks it: a second broker on the same log directory would
    unsettle the first one's KRaft controller.
    """
    backend = backend or catalog_backend()
    reason = available(backend)
    if reason:
        raise RuntimeError(reason)
    ports = ports or Ports()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = [
        name
        for name in SERVERS
        if (name != "prometheus" or shutil.which("prometheus"))
        and (name != "postgresql" or backend == "postgresql")
    ]
    already = running(run_dir)
    recorded = run_dir / "stack.json"
    if already and recorded.exists():
        state = json.loads(recorded.read_text())
        before = Ports(**state["ports"])
        if before != ports:
            raise RuntimeError(
                f"the stack in {run_dir} runs on {before}, not {ports}: stop it first"
            )
        if "ferretdb" in already and state.get("catalog_backend", "sqlite") != backend:
            raise RuntimeError(
                f"the stack in {run_dir} runs FerretDB on {state.get('catalog_backend')}, "
                f"not {backend}: stop it first"
            )
    missing = [name for name in wanted if name not in already]
    for name in missing:
        taken = [port for port in _ports_of(name, ports) if _taken(port)]
        if taken:
            raise RuntimeError(f"{name}: port {taken[0]} is taken by a process not of {run_dir}")
    starters: dict[str, Callable[[Path, Ports], None]] = {
        "minio": start_minio,
        "postgresql": start_postgresql,
        "kafka": start_kafka,
        "prometheus": start_prometheus,
    }
    for name in missing:
        if name != "ferretdb":
            starters[name](run_dir, ports)
    if "postgresql" in wanted:
        _wait(
            "PostgreSQL",
            lambda: (
                _started_since_last_mark(run_dir / "postgresql.log", b"ready to accept connections")
                and _listening(ports.postgresql)
            ),
            timeout,
            run_dir,
            "postgresql",
        )
    if "postgresql" in missing:
        _install_gin_twins(ports)
    if "ferretdb" in missing:
        start_ferretdb(run_dir, ports, backend)
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
    stack = Stack(run_dir=run_dir, ports=ports, catalog_backend=backend)
    recorded.write_text(json.dumps({"ports": asdict(ports), "catalog_backend": backend}))
    return stack


_STOP_SIGNAL = {"postgresql": signal.SIGINT}
"""PostgreSQL's fast shutdown: its SIGTERM would wait for every client to leave."""


def stop_one(run_dir: Path, name: str, timeout: float = 30) -> None:
    """Stop one server by its PID (SIGTERM, SIGINT for PostgreSQL, then SIGKILL)."""
    pid_file = run_dir / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    stop = _STOP_SIGNAL.get(name, signal.SIGTERM)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.send_signal(stop)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        pid_file.unlink(missing_ok=True)
        return
    try:
        os.kill(pid, stop)
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
    for name in ("kafka", "ferretdb", "postgresql", "minio", "prometheus"):
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
