"""The embedded Catalog: patients, studies, series and instances in one SQLite file.

Each level has a table with the keys users search by as indexed columns and
all of that level's attributes as DICOM JSON (PS3.18 F.2), so any attribute
can be returned or matched. A query (PS3.4 C.2.2.2) runs in two steps: an SQL
pre-filter on the indexed columns that never excludes a true match, then
:func:`micropacs.dicom.matching.matches` on every candidate for the answer.

The computed attributes (PS3.4 C.3.4: Number of … Related …, Modalities and
SOP Classes in Study) are counters and sets kept up to date as instances
arrive; nothing counts a whole study per insert.

Durability and concurrency: WAL mode with ``synchronous=FULL``, because the
index commits its event offsets right after a write returns (ARCHITECTURE.md
rule 2) and a write lost on power failure would then never be redone. One
writer connection, guarded by a lock, writes each batch in one
``BEGIN IMMEDIATE`` transaction; queries use a pool of read connections and
never wait for the writer (WAL readers see the last committed state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any, TypeVar

from micropacs.adapters import _groups, _sqlite
from micropacs.adapters import _sqlite_audit as _audit
from micropacs.adapters import _sqlite_catalog_delete as _delete
from micropacs.adapters import _sqlite_catalog_groups as _groups_sql
from micropacs.adapters import _sqlite_catalog_patients as _patients
from micropacs.adapters import _sqlite_catalog_rejections as _rejections
from micropacs.adapters import _sqlite_forwards as _forwards
from micropacs.adapters import _sqlite_notices as _notices
from micropacs.adapters._patients import patient_only, with_identity
from micropacs.adapters._sqlite_catalog_query import Decoder, next_matches, select_sql
from micropacs.adapters._sqlite_catalog_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from micropacs.adapters._sqlite_catalog_write import Batch, Prepared, prepare
from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.matching import Budget, Matcher
from micropacs.errors import CatalogUnavailable, InvalidInput
from micropacs.ports import (
    AuditQuery,
    AuditRecord,
    CatalogCounts,
    Credential,
    ForwardEntry,
    ForwardFailure,
    ForwardQueueStats,
    ForwardState,
    InstanceLocation,
    InstanceMove,
    InstanceRecord,
    Node,
    PendingNotice,
    Query,
    RejectedInstance,
    Rejection,
    StepReferences,
    StorageUsage,
    StoredInstance,
    StudyInGroup,
)

T = TypeVar("T")

log = logging.getLogger(__name__)


def _write_unrejected(conn: sqlite3.Connection, prepared: list[Prepared]) -> None:
    """Write a batch but for its rejected instances, which are kept hidden (IOCM)."""
    shown = _rejections.held_back(conn, prepared)
    if shown:
        Batch(conn).write(shown)


def _begin_read(conn: sqlite3.Connection) -> set[str]:
    """Open a read transaction; the columns where some row holds several values (NULL)."""
    conn.execute("BEGIN")
    return {row[0] for row in conn.execute("SELECT name FROM irregular_columns")}


_CREDENTIAL_COLUMNS = "kind, name, secret_hash, role, description, expires_at, created_at"
_NODE_COLUMNS = (
    "ae_title, host, port, description, tls, issuer_of_patient_id, issuer_of_accession_number,"
    " user_id, storage_group, ae_group, may_store, may_query, may_retrieve,"
    " may_be_move_destination, from_host, allowed_from, tls_certificates"
)
"""The nodes table's columns, in the order put_node writes them and _node_of reads them."""


def _node_of(row: Sequence[Any]) -> Node:
    """The Node of a row of ``_NODE_COLUMNS``."""
    return Node(
        ae_title=row[0],
        host=row[1],
        port=row[2],
        description=row[3],
        tls=bool(row[4]),
        issuer_of_patient_id=row[5],
        issuer_of_accession_number=row[6],
        user_id=row[7],
        storage_group=row[8],
        ae_group=row[9],
        store=bool(row[10]),
        query=bool(row[11]),
        retrieve=bool(row[12]),
        move_destination=bool(row[13]),
        from_host=bool(row[14]),
        allowed_from=tuple(json.loads(row[15])),
        tls_certificates=tuple(json.loads(row[16])),
    )


class SqliteCatalog:
    """The Catalog in the SQLite file at ``path`` (created with its tables on first use).

    ``busy_timeout`` is how long (seconds) a write waits while another
    process holds the write lock before failing with CatalogUnavailable.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()  # guards the writer connection
        self._pool_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    @property
    def path(self) -> Path:
        """The SQLite file holding the catalog."""
        return self._path

    async def open(self) -> None:
        """Create the file and its tables if needed; later calls do nothing."""
        await self._write(lambda conn: None)

    async def upsert_instances(self, records: Sequence[InstanceRecord]) -> None:
        """Write a batch of instances in one transaction; idempotent (see the module doc)."""
        if not records:
            return
        latest: dict[str, InstanceRecord] = {}
        for record in records:
            latest.pop(record.sop_instance_uid, None)
            latest[record.sop_instance_uid] = record
        prepared = await asyncio.to_thread(lambda: [prepare(r) for r in latest.values()])
        await self._write(lambda conn: _write_unrejected(conn, prepared), transaction=True)

    async def query(self, query: Query) -> AsyncIterator[DicomJson]:
        """Entities at ``query.level`` matching its identifier, offset and limit applied."""
        if query.limit < 0 or query.offset < 0:
            raise InvalidInput("a query's limit and offset cannot be negative")
        conn = await self._run(self._acquire)
        cursor: sqlite3.Cursor | None = None
        try:
            # One read transaction, so the irregular columns and the rows share a snapshot.
            irregular = await self._run(_begin_read, conn)
            sql, params = select_sql(query, irregular)
            cursor = await self._run(conn.execute, sql, params)
            decode = Decoder(query.level)
            matcher = Matcher(query.identifier, case_insensitive_pn=query.case_insensitive_pn)
            budget = Budget(query.max_examined)
            skip, left = query.offset, query.limit or -1
            while left:
                matched = await self._run(next_matches, cursor, decode, matcher, budget)
                if matched is None:
                    return
                for result in matched:
                    if skip:
                        skip -= 1
                        budget.spend()
                        continue
                    yield result
                    left -= 1
                    if not left:
                        return
        finally:
            if cursor is not None:
                cursor.close()
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._release(conn)

    async def locate(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
        patient_ids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The instances under the given entities; every non-empty filter must hold."""
        where: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("i.study_uid", study_uids),
            ("i.series_uid", series_uids),
            ("i.sop_instance_uid", sop_instance_uids),
            ("p.patient_id", patient_ids),
        ):
            if values:
                where.append(f"{column} IN (SELECT value FROM json_each(?))")
                params.append(json.dumps([str(v) for v in values]))
        if not where:
            return []
        # The patient's attributes go along when the RIS changed them (see InstanceLocation).
        sql = (
            "SELECT i.sop_instance_uid, i.sop_class_uid, i.series_uid, i.study_uid,"
            " i.object_key, i.transfer_syntax_uid, i.size, p.patient_id, p.issuer,"
            " CASE WHEN EXISTS (SELECT 1 FROM patient_updates u WHERE"
            " u.patient_id = p.patient_id AND u.issuer = p.issuer) THEN p.attrs END, i.sha256"
            " FROM instances i JOIN studies s ON s.study_uid = i.study_uid"
            f" JOIN patients p ON p.pk = s.patient_pk WHERE {' AND '.join(where)}"
            " ORDER BY i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid"
        )
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [
            InstanceLocation(
                sop_instance_uid=row[0],
                sop_class_uid=row[1],
                series_instance_uid=row[2],
                study_instance_uid=row[3],
                object_key=row[4],
                transfer_syntax_uid=row[5],
                size=row[6],
                patient=with_identity(patient_only(json.loads(row[9])), row[7], row[8])
                if row[9]
                else {},
                sha256=row[10],
            )
            for row in rows
        ]

    async def counts(self) -> CatalogCounts:
        """Numbers of patients, studies, series and instances."""

        def count(conn: sqlite3.Connection) -> CatalogCounts:
            conn.execute("BEGIN")  # one snapshot for the four numbers
            try:
                patients = conn.execute("SELECT count(*) FROM patients").fetchone()[0]
                series = conn.execute("SELECT count(*) FROM series").fetchone()[0]
                # The studies' counters, not a scan of every instance.
                studies, instances = conn.execute(
                    "SELECT count(*), coalesce(sum(n_instances), 0) FROM studies"
                ).fetchone()
            finally:
                conn.execute("ROLLBACK")
            return CatalogCounts(patients, studies, series, instances)

        return await self._read(count)

    async def storage_usage(self) -> list[StorageUsage]:
        """Instances and bytes per storage group: the rows the schema's triggers keep
        (:data:`._sqlite_catalog_schema.STORAGE_USAGE`), not a sum over the instances."""

        def read(conn: sqlite3.Connection) -> list[StorageUsage]:
            rows = conn.execute(
                "SELECT storage_group, instances, bytes FROM storage_usage"
                " WHERE instances > 0 ORDER BY storage_group"
            ).fetchall()
            return [StorageUsage(str(group), int(n), int(size)) for group, n, size in rows]

        return await self._read(read)

    async def remove_instances(
        self,
        study_uid: str,
        series_uid: str = "",
        sop_instance_uid: str = "",
        received_until: str = "",
    ) -> list[str]:
        """Remove a study's (series', instance's) instances received by ``received_until``,
        in one transaction (:mod:`._sqlite_catalog_delete`); their object keys."""
        return await self._write(
            lambda conn: _delete.remove(
                conn, study_uid, series_uid, sop_instance_uid, received_until
            ),
            transaction=True,
        )

    async def update_patient(
        self, patient_id: str, issuer_of_patient_id: str, attributes: DicomJson
    ) -> int:
        """Give a patient the RIS's demographics, in one transaction; studies changed."""
        key = (patient_id, issuer_of_patient_id)
        changed = await self._write(
            lambda conn: _patients.update(conn, key, attributes), transaction=True
        )
        return int(changed)

    async def merge_patient(
        self,
        prior_patient_id: str,
        prior_issuer_of_patient_id: str,
        patient_id: str,
        issuer_of_patient_id: str,
    ) -> int:
        """Merge the prior patient into the survivor, in one transaction; studies moved."""
        prior = (prior_patient_id, prior_issuer_of_patient_id)
        survivor = (patient_id, issuer_of_patient_id)
        moved = await self._write(
            lambda conn: _patients.merge(conn, prior, survivor), transaction=True
        )
        return int(moved)

    async def put_node(self, node: Node) -> None:
        """Add a node, or replace the one with the same AE title."""
        if not node.ae_title.strip() or len(node.ae_title) > 16 or "\\" in node.ae_title:
            raise InvalidInput(f"{node.ae_title!r} is not an AE title (1-16 characters, no \\)")
        if not 0 < node.port < 65536:
            raise InvalidInput(f"port {node.port} of {node.ae_title} is not a TCP port")
        try:
            networks = [str(network) for network in node.networks()]
            fingerprints = node.fingerprints()
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        values = (
            *astuple(node)[:10],
            node.store,
            node.query,
            node.retrieve,
            node.move_destination,
            node.from_host,
            json.dumps(networks),
            json.dumps(fingerprints),
        )
        await self._write(
            lambda conn: conn.execute(
                f"INSERT OR REPLACE INTO nodes ({_NODE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            ),
            transaction=True,
        )

    async def remove_node(self, ae_title: str) -> bool:
        """Remove the node with this AE title; False if there was none."""

        def remove(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM nodes WHERE ae_title = ?", (ae_title,)).rowcount > 0

        return bool(await self._write(remove, transaction=True))

    async def nodes(self) -> list[Node]:
        """Every node of the registry, by AE title."""
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY ae_title"
            ).fetchall()
        )
        return [_node_of(row) for row in rows]

    async def put_credential(self, credential: Credential) -> None:
        """Add or replace the credential of that kind and name."""
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO credentials (kind, name, secret_hash, role, description,"
                " expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                astuple(credential),
            ),
            transaction=True,
        )

    async def credential(self, kind: str, name: str) -> Credential | None:
        """The credential of that kind and name, or None."""
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE kind = ? AND name = ?",
                (kind, name),
            ).fetchone()
        )
        return None if row is None else Credential(*row)

    async def credentials(self, kind: str) -> list[Credential]:
        """Every credential of that kind, by name."""
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE kind = ? ORDER BY name",
                (kind,),
            ).fetchall()
        )
        return [Credential(*row) for row in rows]

    async def remove_credential(self, kind: str, name: str) -> bool:
        """Remove a credential; False if it was not there."""

        def remove(conn: sqlite3.Connection) -> bool:
            deleted = conn.execute(
                "DELETE FROM credentials WHERE kind = ? AND name = ?", (kind, name)
            ).rowcount
            return bool(deleted > 0)

        return bool(await self._write(remove, transaction=True))

    async def put_audit(self, records: Sequence[AuditRecord]) -> None:
        """Store audit records; idempotent by event id (:mod:`._sqlite_audit`)."""
        if not records:
            return
        docs = _audit.rows(records)
        await self._write(lambda conn: _audit.put(conn, docs), transaction=True)

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The audit records matching ``query``, newest first."""
        return await self._read(lambda conn: _audit.select(conn, query))

    async def enqueue_forwards(self, entries: Sequence[ForwardEntry]) -> None:
        """Queue entries not queued yet, in one transaction (:mod:`._sqlite_forwards`)."""
        if entries:
            await self._write(lambda conn: _forwards.enqueue(conn, entries), transaction=True)

    async def claim_forwards(
        self, destination: str, now: float, limit: int, lease: float
    ) -> list[ForwardEntry]:
        """Lease the head of a destination's queue, in the writer's transaction."""
        return await self._write(
            lambda conn: _forwards.claim(conn, destination, now, limit, lease), transaction=True
        )

    async def complete_forwards(self, entry_ids: Sequence[str]) -> None:
        """Remove sent entries."""
        if entry_ids:
            await self._write(lambda conn: _forwards.complete(conn, entry_ids), transaction=True)

    async def fail_forwards(self, failures: Sequence[ForwardFailure]) -> None:
        """Count failed attempts and schedule the next ones (or give up)."""
        if failures:
            await self._write(lambda conn: _forwards.fail(conn, failures), transaction=True)

    async def expire_forwards(self, destination: str, enqueued_before: float, error: str) -> int:
        """Make a destination's entries older than the maximum age dead."""
        return await self._write(
            lambda conn: _forwards.expire(conn, destination, enqueued_before, error),
            transaction=True,
        )

    async def forward_queues(self) -> list[ForwardQueueStats]:
        """Counts per destination, from the queue's index."""
        return await self._read(_forwards.stats)

    async def forward_entries(
        self, destination: str, state: ForwardState | None, limit: int, offset: int = 0
    ) -> list[ForwardEntry]:
        """A page of a destination's entries, oldest enqueued first."""
        if limit < 0 or offset < 0:
            raise InvalidInput("a page's limit and offset cannot be negative")
        return await self._read(
            lambda conn: _forwards.page(conn, destination, state, limit, offset)
        )

    async def retry_forwards(self, destination: str, entry_ids: Sequence[str], now: float) -> int:
        """Make entries waiting again, due now."""
        return await self._write(
            lambda conn: _forwards.retry(conn, destination, entry_ids, now), transaction=True
        )

    async def cancel_forwards(
        self, destination: str, entry_ids: Sequence[str], state: ForwardState | None
    ) -> int:
        """Remove entries of a destination."""
        return await self._write(
            lambda conn: _forwards.cancel(conn, destination, entry_ids, state), transaction=True
        )

    async def note_instances(
        self,
        study_uid: str,
        destinations: Sequence[str],
        due_at: float,
        bus_partition: int,
        bus_offset: int,
    ) -> None:
        """Create or postpone a study's notices (:mod:`._sqlite_notices`)."""
        if destinations:
            await self._write(
                lambda conn: _notices.note_instances(
                    conn, study_uid, destinations, due_at, bus_partition, bus_offset
                ),
                transaction=True,
            )

    async def note_performed_step(
        self, study_uid: str, destinations: Sequence[str], due_at: float, step: StepReferences
    ) -> None:
        """Add a completed performed step to a study's notices."""
        if destinations:
            await self._write(
                lambda conn: _notices.note_performed_step(
                    conn, study_uid, destinations, due_at, step
                ),
                transaction=True,
            )

    async def claim_notices(self, now: float, limit: int, lease: float) -> list[PendingNotice]:
        """Lease the notices due or waiting for steps, in the writer's transaction."""
        return await self._write(
            lambda conn: _notices.claim(conn, now, limit, lease), transaction=True
        )

    async def settle_notice(self, notice: PendingNotice, retry_at: float | None) -> bool:
        """Remove or reschedule a claimed notice."""
        return await self._write(
            lambda conn: _notices.settle(conn, notice, retry_at), transaction=True
        )

    async def release_notices(self, notices: Sequence[PendingNotice]) -> None:
        """End the leases of claimed notices."""
        if notices:
            await self._write(lambda conn: _notices.release(conn, notices), transaction=True)

    async def notice_backlog(self) -> dict[str, int]:
        """Pending notices per destination."""
        return await self._read(_notices.backlog)

    async def reject_instances(self, rejections: Sequence[Rejection]) -> int:
        """Record rejections and hide the instances held, in one transaction
        (:mod:`._sqlite_catalog_rejections`); how many were hidden."""
        if not rejections:
            return 0
        return await self._write(
            lambda conn: _rejections.reject(conn, rejections), transaction=True
        )

    async def locate_rejected(
        self,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
    ) -> list[InstanceLocation]:
        """The held rejected instances under the given entities (none given: none)."""
        if not (study_uids or series_uids or sop_instance_uids):
            return []
        return await self._read(
            lambda conn: _rejections.located(conn, study_uids, series_uids, sop_instance_uids)
        )

    async def rejected_instances(self, rejected_until: str, limit: int) -> list[RejectedInstance]:
        """Held rejected instances rejected by ``rejected_until``, oldest first."""
        if limit < 0:
            raise InvalidInput("a limit cannot be negative")
        return await self._read(lambda conn: _rejections.held(conn, rejected_until, limit))

    async def studies_in_group(
        self,
        storage_group: str,
        received_before: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[StudyInGroup]:
        """A page of a group's studies, least recently received first
        (:mod:`._sqlite_catalog_groups`)."""
        _groups.check_limit(limit)
        return await self._read(
            lambda conn: _groups_sql.studies(conn, storage_group, received_before, after, limit)
        )

    async def stored_instances(self, study_uid: str) -> list[StoredInstance]:
        """The study's instances with their storage group, key and receive time."""
        return await self._read(lambda conn: _groups_sql.stored(conn, study_uid))

    async def move_instances(self, study_uid: str, moves: Sequence[InstanceMove]) -> int:
        """Switch a study's instances to their new keys in one transaction."""
        checked = list(_groups.check_moves(study_uid, moves).values())
        if not checked:
            return 0
        return await self._write(
            lambda conn: _groups_sql.move(conn, study_uid, checked), transaction=True
        )

    async def check(self) -> None:
        """Read from the catalog; raise CatalogUnavailable if it does not answer."""
        await self.open()
        await self._read(lambda conn: conn.execute("SELECT count(*) FROM nodes").fetchone())

    async def close(self) -> None:
        """Close every connection; the catalog cannot be used afterwards."""

        def close() -> None:
            with self._lock, self._pool_lock:
                self._closed = True
                if self._writer is not None:
                    with contextlib.suppress(sqlite3.Error):  # only a planner hint
                        self._writer.execute("PRAGMA optimize")
                for conn in self._all:
                    conn.close()
                self._all.clear()
                self._idle.clear()
                self._writer = None

        await asyncio.to_thread(close)

    # -- connections --------------------------------------------------------------------------

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = _sqlite.connect(self._path, self._busy_timeout)
        conn.execute("PRAGMA cache_size = -65536")
        if writer:
            _sqlite.use_wal(conn, self._busy_timeout)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            while 0 < version < SCHEMA_VERSION:
                log.info("migrating the catalog", extra={"from_version": version})
                version = self._migrate(conn, version)
            if version == SCHEMA_VERSION or version == 0:
                _sqlite.retry(lambda: conn.executescript(SCHEMA), self._busy_timeout)
            if version == 0:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                conn.close()
                raise CatalogUnavailable(
                    f"catalog {self._path} has schema version {version}, this micropacs"
                    f" knows {SCHEMA_VERSION}: migrate it or use a matching release"
                )
        else:
            conn.execute("PRAGMA query_only = 1")
        self._all.append(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection, version: int) -> int:
        """One step from ``version``, all of its statements and the new version or none;
        returns the version now stored (another process may have migrated first)."""

        def step() -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if current == version:
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                    current += 1
                    conn.execute(f"PRAGMA user_version = {current}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return current

        return _sqlite.retry(step, self._busy_timeout)

    def _acquire(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise CatalogUnavailable("the catalog is closed")
            if self._idle:
                return self._idle.pop()
        if self._writer is None:
            with self._lock:
                self._writer_connection()
        with self._pool_lock:
            return self._connect(writer=False)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed:
                self._idle.append(conn)

    def _writer_connection(self) -> sqlite3.Connection:
        """The writer connection (creating the schema the first time); hold ``_lock``."""
        if self._closed:
            raise CatalogUnavailable("the catalog is closed")
        if self._writer is None:
            with self._pool_lock:
                self._writer = self._connect(writer=True)
        return self._writer

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(func, *args)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    async def _read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        def read() -> T:
            conn = self._acquire()
            try:
                return _sqlite.retry(lambda: func(conn), self._busy_timeout)
            finally:
                self._release(conn)

        return await self._run(read)

    async def _write(
        self, func: Callable[[sqlite3.Connection], T], *, transaction: bool = False
    ) -> T:
        def write() -> T:
            with self._lock:
                conn = self._writer_connection()
                if not transaction:
                    return func(conn)
                return _sqlite.write_transaction(conn, func, self._busy_timeout)

        return await self._run(write)

    def _unavailable(self, exc: sqlite3.Error) -> CatalogUnavailable:
        return CatalogUnavailable(
            f"catalog {self._path}: {exc}; check that its disk has space and the file is"
            " writable by the micropacs user"
        )
