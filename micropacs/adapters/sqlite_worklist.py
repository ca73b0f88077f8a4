"""The embedded Worklist: scheduled steps, performed steps and the RIS's patients in SQLite.

One file of its own (``worklist.db`` in the data directory). Each table keeps
the DICOM JSON (PS3.18 F.2) of its entity beside the indexed keys of
:mod:`micropacs.adapters._worklist_keys`; the Scheduled Station AE Titles of
an item, multi-valued, are rows of a side table. A query (PS3.4 K.6.1.2,
C.2.2.2) is an SQL pre-filter on those columns that never excludes a true
match, then :class:`~micropacs.dicom.matching.Matcher` on each candidate
(sequence keys on the ScheduledProcedureStepSequence item), in order of
scheduled start date and time.

Durability as the catalog's: WAL with ``synchronous=FULL``, since the index
commits its offsets right after a write returns (ARCHITECTURE.md rule 2).
Writes go through one connection under a lock, each in one ``BEGIN
IMMEDIATE`` transaction; reads use a pool of read-only connections that
never wait for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from micropacs.adapters import _sqlite
from micropacs.adapters._sqlite_catalog_query import condition_sql
from micropacs.adapters._sqlite_catalog_schema import Column
from micropacs.adapters._worklist_keys import (
    FOLDED,
    KEYS,
    STATIONS,
    conditions_of,
    stations_of,
    values_of,
)
from micropacs.dicom import matching
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.errors import CatalogUnavailable, InvalidInput
from micropacs.ports import PatientDemographics, PerformedStep, WorklistItem

T = TypeVar("T")

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file of another version is refused."""
FETCH = 200
"""Candidate rows read and matched per step of a query."""

_KEY_COLUMNS = [key.name for key in KEYS] + [f"{name}_fold" for name in FOLDED]
# The scheduled start is indexed with the order (items_start), the time only there.
_INDEXED = [k.name for k in KEYS if k.kind not in ("da", "time")] + [f"{n}_fold" for n in FOLDED]
_ITEM_COLUMNS = ", ".join(f"{name} TEXT" for name in _KEY_COLUMNS)
_ITEM_INDEXES = "\n".join(
    f"CREATE INDEX IF NOT EXISTS items_{name} ON items ({name});" for name in _INDEXED
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    {_ITEM_COLUMNS},
    attrs TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
{_ITEM_INDEXES}
CREATE INDEX IF NOT EXISTS items_start ON items (start_date, start_time, item_id);
CREATE TABLE IF NOT EXISTS item_stations (
    ae_title TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (ae_title, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_stations_item ON item_stations (item_id);
CREATE TABLE IF NOT EXISTS performed_steps (
    sop_instance_uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS performed_steps_status ON performed_steps (status, updated_at);
CREATE INDEX IF NOT EXISTS performed_steps_updated ON performed_steps (updated_at);
CREATE TABLE IF NOT EXISTS patients (
    issuer_of_patient_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    attrs TEXT NOT NULL,
    merged_into TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (issuer_of_patient_id, patient_id)
);
"""

_STEP_COLUMNS = "sop_instance_uid, attrs, calling_ae, created_at, updated_at"


def _column(key_name: str, kind: str) -> Column:
    """An items column as the catalog's SQL pre-filter (``condition_sql``) takes it."""
    if key_name == STATIONS.name:
        return Column("item_stations", "ae_title", STATIONS.tag, kind, alias="x")
    return Column("items", key_name, "", kind, alias="w")


def select_sql(
    identifier: DicomJson, case_insensitive_pn: bool, unfinished_only: bool = False
) -> tuple[str, list[Any]]:
    """The SQL (and parameters) of an identifier's candidate items, in scheduled order."""
    where: list[str] = []
    params: list[Any] = []
    if unfinished_only:
        finished = sorted(wl.FINISHED_STATUSES)
        where.append(f"(w.status IS NULL OR w.status NOT IN ({', '.join('?' for _ in finished)}))")
        params += finished
    for key, condition in conditions_of(identifier):
        column = _column(key.name, key.kind)
        clause = condition_sql(column, condition, case_insensitive_pn, params)
        if clause is None:
            continue
        if key is STATIONS:
            where.append(
                f"EXISTS (SELECT 1 FROM item_stations x WHERE x.item_id = w.item_id AND {clause})"
            )
        else:
            # NULL: the attribute holds several values, which matching alone can decide.
            where.append(f"({clause} OR {column.sql} IS NULL)")
    return (
        "SELECT w.item_id, w.attrs, w.updated_at FROM items w"
        f"{' WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY w.start_date, w.start_time, w.item_id",
        params,
    )


def _next_matches(
    cursor: sqlite3.Cursor,
    matcher: matching.Matcher,
    budget: matching.Budget,
    unfinished_only: bool,
) -> list[WorklistItem] | None:
    rows = cursor.fetchmany(FETCH)
    if not rows:
        return None
    found = []
    for item_id, attrs, updated_at in rows:
        dataset = json.loads(attrs)
        if matcher(dataset) and not (unfinished_only and wl.is_finished(dataset)):
            found.append(WorklistItem(item_id, dataset, updated_at))
        else:
            budget.spend()
    return found


def _checked_item(item: WorklistItem) -> None:
    if not item.item_id or len(item.item_id) > 128:
        raise InvalidInput("a worklist item's id has 1 to 128 characters")
    if not isinstance(item.dataset, dict):
        raise InvalidInput("a worklist item is a DICOM JSON object")


def _write_item(conn: sqlite3.Connection, item: WorklistItem) -> None:
    values = values_of(item.dataset)
    conn.execute(
        f"INSERT OR REPLACE INTO items (item_id, {', '.join(_KEY_COLUMNS)}, attrs, updated_at)"
        f" VALUES (?, {', '.join('?' for _ in _KEY_COLUMNS)}, ?, ?)",
        (
            item.item_id,
            *(values[name] for name in _KEY_COLUMNS),
            json.dumps(item.dataset, ensure_ascii=False),
            item.updated_at,
        ),
    )
    conn.execute("DELETE FROM item_stations WHERE item_id = ?", (item.item_id,))
    conn.executemany(
        "INSERT INTO item_stations (ae_title, item_id) VALUES (?, ?)",
        [(title, item.item_id) for title in stations_of(item.dataset)],
    )


class SqliteWorklist:
    """The Worklist in the SQLite file at ``path`` (created with its tables on first use).

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
        """The SQLite file holding the worklist."""
        return self._path

    async def open(self) -> None:
        """Create the file and its tables if needed; later calls do nothing."""
        await self._write(lambda conn: None)

    # -- scheduled procedure steps ------------------------------------------------------------

    async def put_item(self, item: WorklistItem) -> None:
        """Add or replace the item of that ``item_id``; idempotent."""
        _checked_item(item)
        await self._write(lambda conn: _write_item(conn, item))

    async def item(self, item_id: str) -> WorklistItem | None:
        """The item of that id, or None."""
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT item_id, attrs, updated_at FROM items WHERE item_id = ?", (item_id,)
            ).fetchone()
        )
        return None if row is None else WorklistItem(row[0], json.loads(row[1]), row[2])

    async def remove_item(self, item_id: str) -> bool:
        """Remove an item; False if it was not there."""

        def remove(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM item_stations WHERE item_id = ?", (item_id,))
            return conn.execute("DELETE FROM items WHERE item_id = ?", (item_id,)).rowcount > 0

        return await self._write(remove)

    async def set_item_status(self, item_id: str, status: str) -> bool:
        """Set the ScheduledProcedureStepStatus of an item; False if it is not there."""

        def update(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT attrs, updated_at FROM items WHERE item_id = ?", (item_id,)
            ).fetchone()
            if row is None:
                return False
            dataset = wl.with_status(json.loads(row[0]), status)
            _write_item(conn, WorklistItem(item_id, dataset, row[1]))
            return True

        return await self._write(update)

    async def find_items(
        self,
        identifier: DicomJson,
        *,
        limit: int = 0,
        case_insensitive_pn: bool = False,
        unfinished_only: bool = False,
        max_examined: int = 0,
    ) -> AsyncGenerator[WorklistItem, None]:
        """Every item matching the identifier (PS3.4 K.6.1.2, C.2.2.2), by scheduled start;
        the finished ones left out in SQL with ``unfinished_only``."""
        if limit < 0 or max_examined < 0:
            raise InvalidInput("a query's limit and max_examined cannot be negative")
        matcher = matching.Matcher(identifier, case_insensitive_pn=case_insensitive_pn)
        budget = matching.Budget(max_examined)
        sql, params = select_sql(identifier, case_insensitive_pn, unfinished_only)
        conn = await self._run(self._acquire)
        cursor: sqlite3.Cursor | None = None
        try:
            cursor = await self._run(conn.execute, sql, params)
            produced = 0
            while (
                found := await self._run(_next_matches, cursor, matcher, budget, unfinished_only)
            ) is not None:
                for item in found:
                    yield item
                    produced += 1
                    if produced == limit:
                        return
        finally:
            if cursor is not None:
                cursor.close()
            self._release(conn)

    # -- performed procedure steps ------------------------------------------------------------

    async def put_step(self, step: PerformedStep) -> None:
        """Add or replace the performed step of that SOP Instance UID; idempotent."""
        if not isinstance(step.dataset, dict):
            raise InvalidInput("a performed procedure step is a DICOM JSON object")
        values = (
            step.sop_instance_uid,
            first_text(step.dataset, wl.PERFORMED_STEP_STATUS).strip(),
            step.calling_ae,
            step.created_at,
            step.updated_at,
            json.dumps(step.dataset, ensure_ascii=False),
        )
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO performed_steps (sop_instance_uid, status, calling_ae,"
                " created_at, updated_at, attrs) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
        )

    async def step(self, sop_instance_uid: str) -> PerformedStep | None:
        """The performed step of that SOP Instance UID, or None."""
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM performed_steps WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        )
        return None if row is None else _step_of(row)

    async def steps(
        self, status: str = "", updated_before: str = "", updated_after: str = ""
    ) -> AsyncIterator[PerformedStep]:
        """Performed steps of that status, last changed in [after, before), oldest change first."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if updated_before:
            where.append("updated_at < ?")
            params.append(updated_before)
        if updated_after:
            where.append("updated_at >= ?")
            params.append(updated_after)
        sql = (
            f"SELECT {_STEP_COLUMNS} FROM performed_steps"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            " ORDER BY updated_at, sop_instance_uid"
        )
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        for row in rows:
            yield _step_of(row)

    # -- patients -------------------------------------------------------------------------------

    async def put_patient(self, patient: PatientDemographics) -> None:
        """Add or replace a patient's demographics; idempotent."""
        if not patient.patient_id or not isinstance(patient.dataset, dict):
            raise InvalidInput("a patient has a Patient ID and a DICOM JSON object")
        values = (
            patient.issuer_of_patient_id,
            patient.patient_id,
            json.dumps(patient.dataset, ensure_ascii=False),
            patient.merged_into,
            patient.updated_at,
        )
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO patients (issuer_of_patient_id, patient_id, attrs,"
                " merged_into, updated_at) VALUES (?, ?, ?, ?, ?)",
                values,
            )
        )

    async def patient(
        self, patient_id: str, issuer_of_patient_id: str
    ) -> PatientDemographics | None:
        """That patient's demographics, or None."""
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT attrs, merged_into, updated_at FROM patients"
                " WHERE issuer_of_patient_id = ? AND patient_id = ?",
                (issuer_of_patient_id, patient_id),
            ).fetchone()
        )
        if row is None:
            return None
        return PatientDemographics(
            patient_id, issuer_of_patient_id, json.loads(row[0]), row[1], row[2]
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Read from the store; raise CatalogUnavailable if it does not answer."""
        await self.open()
        await self._read(lambda conn: conn.execute("SELECT count(*) FROM patients").fetchone())

    async def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""

        def close() -> None:
            with self._lock, self._pool_lock:
                self._closed = True
                for conn in self._all:
                    conn.close()
                self._all.clear()
                self._idle.clear()
                self._writer = None

        await asyncio.to_thread(close)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = _sqlite.connect(self._path, self._busy_timeout)
        if writer:
            _sqlite.use_wal(conn, self._busy_timeout)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                conn.close()
                raise CatalogUnavailable(
                    f"worklist {self._path} has schema version {version}, this micropacs"
                    f" knows {SCHEMA_VERSION}: use a matching release"
                )
            _sqlite.retry(lambda: conn.executescript(SCHEMA), self._busy_timeout)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            conn.execute("PRAGMA query_only = 1")
        self._all.append(conn)
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise CatalogUnavailable("the worklist is closed")
            if self._idle:
                return self._idle.pop()
        with self._lock:
            self._writer_connection()  # the schema exists before anyone reads
        with self._pool_lock:
            return self._connect(writer=False)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed:
                self._idle.append(conn)

    def _writer_connection(self) -> sqlite3.Connection:
        """The writer connection (creating the schema the first time); hold ``_lock``."""
        if self._closed:
            raise CatalogUnavailable("the worklist is closed")
        if self._writer is None:
            with self._pool_lock:
                self._writer = self._connect(writer=True)
        return self._writer

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(func, *args)
        except sqlite3.Error as exc:
            raise CatalogUnavailable(
                f"worklist {self._path}: {exc}; check that its disk has space and the file is"
                " writable by the micropacs user"
            ) from exc

    async def _read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        def read() -> T:
            conn = self._acquire()
            try:
                return _sqlite.retry(lambda: func(conn), self._busy_timeout)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                self._release(conn)

        return await self._run(read)

    async def _write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        def write() -> T:
            with self._lock:
                return _sqlite.write_transaction(
                    self._writer_connection(), func, self._busy_timeout
                )

        return await self._run(write)


def _step_of(row: tuple[Any, ...]) -> PerformedStep:
    uid, attrs, calling_ae, created_at, updated_at = row
    return PerformedStep(uid, json.loads(attrs), calling_ae, created_at, updated_at)
