"""The indexed keys of worklist items, as both worklist adapters store them (private).

The keys are those of :class:`micropacs.dicom.worklist.WorklistKeys` (PS3.4
K.6.1.2.1), at the top level of an item or inside its
ScheduledProcedureStepSequence item. An adapter keeps each one's normalised
value beside the item's DICOM JSON and pre-filters a query on them; the
pre-filter may let through items that do not match, never the reverse, and
:mod:`micropacs.dicom.matching` decides (C.2.2.2, sequence matching C.2.2.2.6).

A key whose attribute holds several values is stored as None ("irregular"):
such an item always passes the pre-filter on it. Scheduled Station AE Title
is multi-valued by nature and kept as a list of its values.
"""

from __future__ import annotations

from dataclasses import dataclass

from micropacs.adapters._sqlite_catalog_schema import kind_of, normalise
from micropacs.dicom import matching, tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.dicom.matching import Condition, SequenceMatch, fold


@dataclass(frozen=True)
class Key:
    """One indexed key: its field name (a :class:`WorklistKeys` field), tag and matching kind.

    ``kind`` is that of :func:`micropacs.adapters._sqlite_catalog_schema.kind_of`:
    ``text``, ``pn``, ``ui`` and ``da`` keys are pre-filtered, ``time`` keys only order.
    """

    name: str
    tag: str
    kind: str
    in_step: bool = False


KEYS: tuple[Key, ...] = (
    Key("patient_id", tags.PATIENT_ID, "text"),
    Key("issuer_of_patient_id", tags.ISSUER_OF_PATIENT_ID, "text"),
    Key("patient_name", tags.PATIENT_NAME, "pn"),
    Key("accession_number", tags.ACCESSION_NUMBER, "text"),
    Key("requested_procedure_id", wl.REQUESTED_PROCEDURE_ID, "text"),
    Key("study_instance_uid", tags.STUDY_INSTANCE_UID, "ui"),
    Key("modality", tags.MODALITY, "text", in_step=True),
    Key("start_date", wl.SCHEDULED_START_DATE, "da", in_step=True),
    Key("start_time", wl.SCHEDULED_START_TIME, "time", in_step=True),
    Key("performing_physician", wl.SCHEDULED_PERFORMING_PHYSICIAN, "pn", in_step=True),
    Key("step_id", wl.SCHEDULED_STEP_ID, "text", in_step=True),
    Key("status", wl.SCHEDULED_STEP_STATUS, "text", in_step=True),
)
"""The single-valued keys, one column or field each (persons' names also folded)."""

STATIONS = Key("station_ae_titles", wl.SCHEDULED_STATION_AE_TITLE, "text", in_step=True)
"""Scheduled Station AE Title: every value is kept (a side table, an array)."""

FOLDED = tuple(key.name for key in KEYS if key.kind == "pn")
"""The keys also stored case-folded (``<name>_fold``), for ``case_insensitive_pn``."""


def values_of(dataset: DicomJson) -> dict[str, str | None]:
    """The stored value of every key of :data:`KEYS` (and the folded names): "" when
    absent, None when several."""
    step = wl.scheduled_step(dataset)
    values: dict[str, str | None] = {}
    for key in KEYS:
        texts = text_of((step if key.in_step else dataset).get(key.tag), skip_blank=True)
        value = None if len(texts) > 1 else normalise(texts[0], key.kind) if texts else ""
        if key.kind == "time" and value:
            value = value.replace(":", "")  # the old HH:MM:SS form orders like HHMMSS
        values[key.name] = value
    for name in FOLDED:
        value = values[name]
        values[f"{name}_fold"] = None if value is None else fold(value)
    return values


def stations_of(dataset: DicomJson) -> list[str]:
    """The item's Scheduled Station AE Titles, as matching compares them."""
    step = wl.scheduled_step(dataset)
    return sorted({t.strip() for t in text_of(step.get(STATIONS.tag), skip_blank=True)})


def conditions_of(identifier: DicomJson) -> list[tuple[Key, Condition]]:
    """The identifier's conditions on indexed keys an adapter may pre-filter on.

    Keys of the ScheduledProcedureStepSequence come from its one item; a key
    is left out when the identifier gives it another VR than the standard's
    (matching then interprets its values otherwise).
    """
    top = matching.matching_keys(identifier)
    sequence = top.get(wl.SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    step = sequence.item if isinstance(sequence, SequenceMatch) else {}
    in_step = matching.matching_keys(step) if step else {}
    found: list[tuple[Key, Condition]] = []
    for key in (*KEYS, STATIONS):
        source, conditions = (step, in_step) if key.in_step else (identifier, top)
        condition = conditions.get(key.tag)
        if condition is None or key.kind == "time":
            continue
        if kind_of(str(source[key.tag].get("vr", "UN"))) == key.kind:
            found.append((key, condition))
    return found
