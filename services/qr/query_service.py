"""QueryService: C-FIND (and later QIDO-RS and the admin search) over the catalog.

Implements the SCP side of PS3.4 C.4.1: the identifier's keys with values are
matching keys (C.2.2.2), keys without values are return keys; every response
holds exactly the requested keys, plus the unique keys of the query level
and above (C.4.1.1.3.2) and the Query/Retrieve Level.
"""

from __future__ import annotations

import time
from typing import Any

from micropacs.config import QuerySettings
from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.errors import InvalidIdentifier
from micropacs.ports import Catalog, Level, Query
from services.qr.metrics import QrMetrics

QUERY_RETRIEVE_LEVEL = "00080052"
SPECIFIC_CHARACTER_SET = "00080005"
RETRIEVE_AE_TITLE = "00080054"
INSTANCE_AVAILABILITY = "00080056"
NOT_MATCHED = {
    SPECIFIC_CHARACTER_SET,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    INSTANCE_AVAILABILITY,
}

PATIENT_ID = "00100020"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
UNIQUE_KEYS: dict[Level, list[tuple[str, str]]] = {
    Level.PATIENT: [(PATIENT_ID, "LO")],
    Level.STUDY: [(STUDY_UID, "UI")],
    Level.SERIES: [(STUDY_UID, "UI"), (SERIES_UID, "UI")],
    Level.IMAGE: [(STUDY_UID, "UI"), (SERIES_UID, "UI"), (SOP_INSTANCE_UID, "UI")],
}


def level_of(identifier: DicomJson) -> Level:
    """The Query/Retrieve Level (0008,0052) of an identifier (PS3.4 C.4.1.1.3.1)."""
    values = text_of(identifier.get(QUERY_RETRIEVE_LEVEL, {}))
    name = values[0].strip().upper() if values else ""
    try:
        return Level(name)
    except ValueError:
        raise InvalidIdentifier(
            f"QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE, not {name!r}"
        ) from None


def check_uids(identifier: DicomJson) -> None:
    """Refuse UI keys that are not UIDs or lists of UIDs (PS3.4 C.2.2.2.2)."""
    for tag, element in identifier.items():
        if element.get("vr") != "UI":
            continue
        for value in text_of(element):
            if value and value != "*" and not is_valid_uid(value):
                raise InvalidIdentifier(f"({tag[:4]},{tag[4:]}) holds {value!r}, not a UID")


class QueryService:
    """Answers queries at every level from the catalog."""

    def __init__(
        self, catalog: Catalog, metrics: QrMetrics, settings: QuerySettings, ae_title: str
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._settings = settings
        self._ae_title = ae_title

    async def find(
        self, identifier: DicomJson, *, limit: int = 0, offset: int = 0, include_all: bool = False
    ) -> list[DicomJson]:
        """Every match of ``identifier`` as a response holding the requested keys
        (and, with ``include_all``, every attribute the catalog holds: QIDO-RS
        ``includefield=all`` and WADO-RS metadata)."""
        started = time.perf_counter()
        level = level_of(identifier)
        check_uids(identifier)
        keys = {
            tag: element
            for tag, element in identifier.items()
            if tag not in NOT_MATCHED and not tag.startswith("0000")
        }
        cap = self._settings.max_results
        query = Query(
            level=level,
            identifier=keys,
            limit=min(limit, cap) if limit else cap,
            offset=offset,
            case_insensitive_pn=self._settings.case_insensitive_pn,
        )
        responses = [
            self._response(level, identifier, keys, found, include_all)
            async for found in self._catalog.query(query)
        ]
        self._metrics.query_seconds.labels(level=level.value).observe(time.perf_counter() - started)
        return responses

    def _response(
        self,
        level: Level,
        identifier: DicomJson,
        keys: DicomJson,
        found: DicomJson,
        include_all: bool = False,
    ) -> DicomJson:
        response: DicomJson = dict(found) if include_all else {}
        for tag, element in keys.items():
            stored = found.get(tag)
            if stored is None or "Value" not in stored:
                response[tag] = {"vr": element.get("vr", "UN")}
            elif element.get("vr") == "SQ":
                response[tag] = _sequence_subset(element, stored)
            else:
                response[tag] = stored
        for tag, vr in UNIQUE_KEYS[level]:
            if tag not in response and tag in found:
                response[tag] = found[tag]
            response.setdefault(tag, {"vr": vr})
        response[QUERY_RETRIEVE_LEVEL] = {"vr": "CS", "Value": [level.value]}
        if RETRIEVE_AE_TITLE in identifier:
            response[RETRIEVE_AE_TITLE] = {"vr": "AE", "Value": [self._ae_title]}
        if INSTANCE_AVAILABILITY in identifier:
            response[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
        return dict(sorted(response.items()))


def _sequence_subset(requested: DicomJson, stored: DicomJson) -> DicomJson:
    """Stored sequence items cut down to the keys of the requested item, if any."""
    items: list[Any] = requested.get("Value") or []
    wanted = items[0] if items else {}
    if not wanted:
        return stored
    subset = [
        {tag: item.get(tag, {"vr": element.get("vr", "UN")}) for tag, element in wanted.items()}
        for item in stored.get("Value", [])
    ]
    return {"vr": "SQ", "Value": subset}
