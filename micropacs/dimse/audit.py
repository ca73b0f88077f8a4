"""One audit record per DICOM association, sent once when it ends.

While an association runs, its :class:`AssociationTally` (kept on the
association itself) counts each operation's final responses and collects the
study UIDs and patient IDs it touched: for C-FIND, C-GET and C-MOVE from the
request's identifier; for C-STORE, from the handler that stored the object, by
:func:`note_study` (one set insertion, nothing decoded on the hot path). When it
is released, aborted or its connection drops, one ``association`` record goes to
the :class:`~micropacs.audit.AuditTrail` without the association thread waiting
for it; a rejected association is recorded at once.

Outcomes (ATNA EventOutcomeIndicator): 0 released with every operation
successful (warnings included), 4 some operation failed or the association was
rejected, 8 aborted or dropped without a release.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pynetdicom import evt

from micropacs.audit import AuditTrail
from micropacs.errors import Status
from micropacs.events import AuditRecorded, Outcome

log = logging.getLogger(__name__)

_ATTRIBUTE = "_micropacs_audit"
_IDENTIFIER_REQUESTS = {"C_FIND_RQ", "C_GET_RQ", "C_MOVE_RQ"}
_MOST_UIDS = 1000
"""Studies (and patients) kept per association: a record stays bounded."""


@dataclass
class AssociationTally:
    """What one association did so far."""

    calling_ae: str
    called_ae: str
    address: str
    operations: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    sent: bool = False

    def touched(self, study_uid: str, patient_id: str = "") -> None:
        """Add a study (and its patient) to the association's record."""
        if study_uid and len(self.studies) < _MOST_UIDS:
            self.studies.add(study_uid)
        if patient_id and len(self.patients) < _MOST_UIDS:
            self.patients.add(patient_id)

    def record(self, ending: str) -> AuditRecorded:
        """The audit record of the association ended by ``ending``."""
        outcome = Outcome.SUCCESS
        if self.failures:
            outcome = Outcome.MINOR_FAILURE
        if ending != "released":
            outcome = Outcome.SERIOUS_FAILURE
        failed = ", ".join(f"{op}: {n} failed" for op, n in sorted(self.failures.items()))
        return AuditRecorded(
            kind="association",
            outcome=outcome,
            actor=self.calling_ae,
            role="requestor",
            source=self.address,
            destination=self.called_ae,
            study_uids=tuple(sorted(self.studies)),
            patient_ids=tuple(sorted(self.patients)),
            operations=dict(self.operations),
            detail=f"{ending}; {failed}" if failed else ending,
        )


def tally_of(assoc: Any) -> AssociationTally | None:
    """The tally of an accepted association (None before it was accepted)."""
    tally: AssociationTally | None = getattr(assoc, _ATTRIBUTE, None)
    return tally


def note_study(event: evt.Event, study_uid: str, patient_id: str = "") -> None:
    """Record that the request of ``event`` touched that study (a C-STORE handler calls
    it with the stored object's StudyInstanceUID and PatientID)."""
    tally = tally_of(event.assoc)
    if tally is not None:
        tally.touched(study_uid, patient_id)


def _text(value: object) -> str:
    return str(value or "").strip()


class AssociationAudit:
    """The bindings that keep each association's tally and send its record."""

    def __init__(self, trail: AuditTrail, loop: asyncio.AbstractEventLoop) -> None:
        self._trail = trail
        self._loop = loop

    def handlers(self) -> list[Any]:
        """The (event, handler) bindings, all notification events."""
        return [
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_DIMSE_RECV, self._received),
            (evt.EVT_DIMSE_SENT, self._sent),
            (evt.EVT_RELEASED, self._released),
            (evt.EVT_ABORTED, self._aborted),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]

    def _accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        tally = AssociationTally(
            calling_ae=_text(assoc.requestor.ae_title),
            called_ae=_text(assoc.acceptor.ae_title),
            address=_text(assoc.requestor.address),
        )
        setattr(assoc, _ATTRIBUTE, tally)

    def _rejected(self, event: evt.Event) -> None:
        assoc = event.assoc
        self._send(
            AuditRecorded(
                kind="association",
                outcome=Outcome.MINOR_FAILURE,
                actor=_text(assoc.requestor.ae_title),
                role="requestor",
                source=_text(assoc.requestor.address),
                destination=_text(assoc.acceptor.ae_title),
                detail="rejected",
            )
        )

    def _received(self, event: evt.Event) -> None:
        message = event.message
        name = getattr(message, "message_name", type(message).__name__)
        if name not in _IDENTIFIER_REQUESTS:
            return  # C-STORE data sets stay unread here
        tally = tally_of(event.assoc)
        encoded = message.data_set
        if tally is None or encoded is None:
            return
        try:
            identifier = dcmread(
                BytesIO(encoded.getvalue()),
                force=True,
                specific_tags=["StudyInstanceUID", "PatientID"],
            )
        except Exception:  # noqa: BLE001 - the operation answers it; the record goes on
            return
        study = identifier.get("StudyInstanceUID")
        studies = study if isinstance(study, list | tuple) else [study]
        for uid in studies:
            tally.touched(_text(uid))
        tally.touched("", _text(identifier.get("PatientID")))

    def _sent(self, event: evt.Event) -> None:
        message = event.message
        name = getattr(message, "message_name", type(message).__name__)
        if not name.endswith("_RSP"):
            return
        status = getattr(message.command_set, "Status", None)
        if status is None:
            return
        status = int(status)
        if status in (Status.PENDING, Status.PENDING_WARNING):
            return
        tally = tally_of(event.assoc)
        if tally is None:
            return
        operation = name.removesuffix("_RSP").replace("_", "-")
        tally.operations[operation] += 1
        if status not in (Status.SUCCESS, Status.CANCEL) and status not in Status.STORE_WARNINGS:
            tally.failures[operation] += 1

    def _released(self, event: evt.Event) -> None:
        self._end(event, "released")

    def _aborted(self, event: evt.Event) -> None:
        self._end(event, "aborted")

    def _closed(self, event: evt.Event) -> None:
        self._end(event, "connection closed")

    def _end(self, event: evt.Event, ending: str) -> None:
        tally = tally_of(event.assoc)
        if tally is None or tally.sent:
            return
        tally.sent = True
        self._send(tally.record(ending))

    def _send(self, record: AuditRecorded) -> None:
        """Hand the record to the loop; the association thread does not wait."""
        try:
            asyncio.run_coroutine_threadsafe(self._trail.record(record), self._loop)
        except RuntimeError:  # the loop is closed: the process is stopping
            log.warning("association audit record lost: the loop is closed")
