"""Modality Worklist C-FIND SCP (PS3.4 K.6.1: Modality Worklist Information Model - FIND).

:class:`ModalityWorklist` answers an identifier from the Worklist store: its
keys with values are matching keys (C.2.2.2, sequence matching inside
ScheduledProcedureStepSequence), and each answer holds every requested key plus
every Type 1 and Type 2 return key of K.6.1.2.2 (Table K.6-1), empty when the
item does not know it. Steps that are over (COMPLETED, DISCONTINUED, CANCELED)
are answered only to a query for their ScheduledProcedureStepStatus. The DIMSE
handler :func:`handle_find` only translates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt

from micropacs.bridge import LoopBridge
from micropacs.config import QuerySettings, WorklistSettings
from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.charset import response_charset
from micropacs.dicom.json_model import (
    BINARY_VRS,
    DicomJson,
    element,
    text_of,
    to_json,
)
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.dimse import find_responses
from micropacs.dimse.access import NOT_AUTHORIZED, Permission, refused
from micropacs.dimse.find_responses import JsonIdentifier
from micropacs.dimse.flow import wait_for_peer
from micropacs.errors import (
    InvalidIdentifier,
    InvalidInput,
    MicropacsError,
    QueryTooBroad,
    Status,
)
from micropacs.ports import Worklist
from micropacs.read_barrier import ReadBarrier
from services.worklist.failures import failure
from services.worklist.metrics import WorklistMetrics
from services.worklist.read_scope import READER, items_scope

log = logging.getLogger(__name__)

MWL_FIND = "1.2.840.10008.5.1.4.31"
"""Modality Worklist Information Model - FIND (PS3.4 K.6.1.1)."""
IDENTIFIER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def _keys(*keywords: str) -> tuple[tuple[str, str], ...]:
    return tuple((tag_of(k), str(dictionary_VR(int(tag_of(k), 16)))) for k in keywords)


RETURN_KEYS = _keys(
    # Requested Procedure (PS3.4 Table K.6-1)
    "RequestedProcedureID",
    "StudyInstanceUID",
    "ReferencedStudySequence",
    "RequestedProcedurePriority",
    "PatientTransportArrangements",
    # Imaging Service Request
    "AccessionNumber",
    "RequestingPhysician",
    "ReferringPhysicianName",
    # Visit Identification, Status and Relationship
    "AdmissionID",
    "CurrentPatientLocation",
    "ReferencedPatientSequence",
    # Patient Identification, Demographic and Medical
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "ConfidentialityConstraintOnPatientDataDescription",
    "PatientWeight",
    "PatientState",
    "PregnancyStatus",
    "MedicalAlerts",
    "Allergies",
    "SpecialNeeds",
)
"""The Type 1 and Type 2 return keys outside the scheduled step (PS3.4 K.6.1.2.2)."""
STEP_RETURN_KEYS = _keys(
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepID",
)
"""The Type 1 and Type 2 return keys of the ScheduledProcedureStepSequence item."""
CONDITIONAL_KEYS = _keys("RequestedProcedureDescription", "RequestedProcedureCodeSequence")
"""Type 1C keys: returned whenever the item holds them."""
CONDITIONAL_STEP_KEYS = _keys(
    "ScheduledProcedureStepDescription",
    "ScheduledProtocolCodeSequence",
    "PreMedication",
    "RequestedContrastAgent",
)

_NOT_MATCHED = {tags.SPECIFIC_CHARACTER_SET, tags.QUERY_RETRIEVE_LEVEL}
_SPS = model.SCHEDULED_PROCEDURE_STEP_SEQUENCE


def _has_value(key: DicomJson | None) -> bool:
    return bool(text_of(key, skip_blank=True)) or bool(
        isinstance(key, dict) and key.get("vr") == "SQ" and key.get("Value")
    )


def check_identifier(identifier: DicomJson) -> None:
    """Refuse an identifier the Modality Worklist model cannot answer (PS3.4 K.6.1.2,
    C.4.1.1.4: 0xA900 Identifier Does Not Match SOP Class)."""
    sps = identifier.get(_SPS)
    if sps is not None:
        if sps.get("vr") != "SQ":
            raise InvalidIdentifier("ScheduledProcedureStepSequence is not a sequence")
        items = sps.get("Value") or []
        if len(items) > 1:
            raise InvalidIdentifier("ScheduledProcedureStepSequence must hold exactly one item")
    for data in (identifier, model.scheduled_step(identifier)):
        for tag, key in data.items():
            if not isinstance(key, dict):
                raise InvalidIdentifier(f"({tag[:4]},{tag[4:]}) is not an attribute")
            if key.get("vr") == "UI":
                for value in text_of(key, skip_blank=True):
                    if value != "*" and not is_valid_uid(value):
                        raise InvalidIdentifier(
                            f"({tag[:4]},{tag[4:]}) holds something that is not a UID"
                        )


def _unsupported(data: DicomJson) -> set[str]:
    """Matching keys no matching of C.2.2.2 applies to (binary VRs, private attributes):
    ignored, and the matches answered 0xFF01 (PS3.4 K.6.1.2.3, optional keys)."""
    return {
        tag
        for tag, key in data.items()
        if _has_value(key) and (key.get("vr") in BINARY_VRS or int(tag[:4], 16) % 2 == 1)
    }


def answer_charset(answer: DicomJson, requested: Any, stored: Any) -> str | None:
    """The Specific Character Set of an answer (PS3.5 6.1.2.3): the requester's when it
    can represent the answer; without one, the stored item's (the RIS's: ISO_IR 100,
    ISO_IR 101 …) when it can; else ISO_IR 192."""
    if not requested and stored:
        return response_charset(answer, stored)
    return response_charset(answer, requested)


class ModalityWorklist:
    """Answers Modality Worklist queries from the Worklist store (PS3.4 K.6.1.2)."""

    def __init__(
        self,
        worklist: Worklist,
        metrics: WorklistMetrics,
        settings: WorklistSettings,
        query: QuerySettings,
        barrier: ReadBarrier | None = None,
    ) -> None:
        self._worklist = worklist
        self._metrics = metrics
        self._settings = settings
        self._query = query
        self._barrier = barrier

    async def find(
        self, identifier: DicomJson, *, calling_ae: str = ""
    ) -> tuple[list[DicomJson], bool]:
        """The answers to ``identifier`` and whether every matching key was supported.

        With ``own_station_only`` a query naming no ScheduledStationAETitle
        matches the items of ``calling_ae`` only. At most ``max_results`` answers.
        """
        started = time.perf_counter()
        check_identifier(identifier)
        keys = {t: k for t, k in identifier.items() if t not in _NOT_MATCHED}
        step_keys = dict(model.scheduled_step(keys))
        unsupported = _unsupported(keys) | _unsupported(step_keys)
        matching = {t: k for t, k in keys.items() if t not in unsupported and t != _SPS}
        step_matching = {t: k for t, k in step_keys.items() if t not in unsupported}
        station = step_matching.get(model.SCHEDULED_STATION_AE_TITLE)
        if self._settings.own_station_only and not _has_value(station) and calling_ae:
            step_matching[model.SCHEDULED_STATION_AE_TITLE] = element("AE", calling_ae)
        if any(_has_value(k) for k in step_matching.values()):
            matching[_SPS] = {"vr": "SQ", "Value": [step_matching]}
        if self._barrier is not None:  # an order acknowledged before the query, it finds
            await self._barrier.wait(READER, items_scope())
        cap = self._query.max_results
        answers: list[DicomJson] = []
        found = self._worklist.find_items(
            matching,
            case_insensitive_pn=self._query.case_insensitive_pn,
            # Finished steps are left out by the store, not read: history does not slow a query.
            unfinished_only=not _has_value(step_keys.get(model.SCHEDULED_STEP_STATUS)),
            # Raises QueryTooBroad (0xA700) past MICROPACS_QUERY__MAX_EXAMINED candidates.
            max_examined=self._query.max_examined,
        )
        async with aclosing(found):  # the store's cursor, now rather than when collected
            async for item in found:
                answers.append(_answer(keys, step_keys, item.dataset))
                if cap and len(answers) >= cap:
                    log.warning("worklist query cut at max_results", extra={"max_results": cap})
                    break
        self._metrics.query_seconds.observe(time.perf_counter() - started)
        return answers, not unsupported


def _answer(keys: DicomJson, step_keys: DicomJson, stored: DicomJson) -> DicomJson:
    """The requested keys and the required return keys, from one stored item."""
    response = _pick(stored, keys, RETURN_KEYS, CONDITIONAL_KEYS)
    step = _pick(model.scheduled_step(stored), step_keys, STEP_RETURN_KEYS, CONDITIONAL_STEP_KEYS)
    response[_SPS] = {"vr": "SQ", "Value": [dict(sorted(step.items()))]}
    charset = stored.get(tags.SPECIFIC_CHARACTER_SET)
    if charset is not None:
        response[tags.SPECIFIC_CHARACTER_SET] = charset
    else:
        response.pop(tags.SPECIFIC_CHARACTER_SET, None)
    return dict(sorted(response.items()))


def _pick(
    stored: DicomJson,
    requested: DicomJson,
    required: tuple[tuple[str, str], ...],
    conditional: tuple[tuple[str, str], ...],
) -> DicomJson:
    out: DicomJson = {}
    for tag, key in requested.items():
        if tag == _SPS:
            continue
        found = stored.get(tag)
        out[tag] = found if found is not None and "Value" in found else element(key.get("vr", "UN"))
    for tag, vr in required:
        if tag not in out:
            found = stored.get(tag)
            out[tag] = found if found is not None and "Value" in found else element(vr)
    for tag, _vr in conditional:
        if tag not in out and tag in stored:
            out[tag] = stored[tag]
    return out


def add_contexts(ae: AE) -> None:
    """Accept the Modality Worklist Information Model - FIND (PS3.4 K.6.1.1)."""
    ae.add_supported_context(MWL_FIND, IDENTIFIER_SYNTAXES)


def _identifier(event: evt.Event) -> DicomJson:
    try:
        return to_json(event.identifier)
    except Exception as exc:
        # The exception's text may quote the identifier's values: only its type is told.
        raise InvalidInput(f"identifier cannot be decoded ({type(exc).__name__})") from exc


def handle_find(
    event: evt.Event, service: ModalityWorklist, bridge: LoopBridge, metrics: WorklistMetrics
) -> Iterator[tuple[int | Dataset, JsonIdentifier | Dataset | None]]:
    """C-FIND of the worklist (PS3.4 K.6.1.2): one Pending (0xFF00, or 0xFF01 when a
    matching key was not supported) per scheduled step, then Success; 0xA900 or 0xC000
    with an Error Comment for an identifier that cannot be answered; Cancel (0xFE00)
    after a C-CANCEL; 0x0124 for a node that may not query."""
    if refused(event, Permission.QUERY, "C-FIND"):
        metrics.queries.labels(status=f"0x{NOT_AUTHORIZED:04X}").inc()
        yield NOT_AUTHORIZED, None
        return
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    try:
        request = event.identifier
        requested_charset = request.get("SpecificCharacterSet")
        answers, supported = bridge.run(service.find(_identifier(event), calling_ae=calling_ae))
    except QueryTooBroad as exc:
        log.warning("worklist C-FIND refused: too broad", extra={"max_examined": exc.limit})
        metrics.queries.labels(status=f"0x{exc.dimse:04X}").inc()
        yield failure(exc.dimse, f"more than {exc.limit} items examined (max_examined)"), None
        return
    except MicropacsError as exc:
        log.warning("worklist C-FIND refused", extra={"reason": str(exc)})
        metrics.queries.labels(status=f"0x{exc.dimse:04X}").inc()
        yield failure(exc.dimse, str(exc)), None
        return
    except Exception as exc:
        # An unexpected error's text or traceback may hold the identifier's values.
        log.error("worklist C-FIND failed", extra={"error": type(exc).__name__})
        log.debug("worklist C-FIND failure", exc_info=True)
        metrics.queries.labels(status=f"0x{Status.UNABLE_TO_PROCESS:04X}").inc()
        yield Status.UNABLE_TO_PROCESS, None
        return
    pending = Status.PENDING if supported else Status.PENDING_WARNING
    direct = find_responses.installed()
    for answer in answers:
        wait_for_peer(event.assoc)  # so that a C-CANCEL is read before the next match
        if event.is_cancelled:
            metrics.queries.labels(status=f"0x{Status.CANCEL:04X}").inc()
            yield Status.CANCEL, None
            return
        stored_charset = answer.pop(tags.SPECIFIC_CHARACTER_SET, {}).get("Value")
        identifier = JsonIdentifier(
            answer, answer_charset(answer, requested_charset, stored_charset)
        )
        # Encoded straight from the stored JSON where pynetdicom was told how.
        yield pending, identifier if direct else identifier.dataset()
    metrics.queries.labels(status=f"0x{Status.SUCCESS:04X}").inc()
