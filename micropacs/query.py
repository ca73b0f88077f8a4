"""Queries of the archive at every level: what C-FIND, QIDO-RS and the admin search answer.

Implements the SCP side of PS3.4 C.4.1: the identifier's keys with values are
matching keys (C.2.2.2), keys without values are return keys; every response
holds exactly the requested keys, plus the unique keys of the query level
and above (C.4.1.1.3.2) and the Query/Retrieve Level. The services around it
add what is theirs (the qr service its metrics).
"""

from __future__ import annotations

from typing import Any

from micropacs.config import QuerySettings
from micropacs.dicom.json_model import DicomJson, element, text_of
from micropacs.dicom.levels import UNIQUE_KEYS, Level
from micropacs.dicom.tags import (
    INSTANCE_AVAILABILITY,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
)
from micropacs.dicom.uids import is_valid_uid
from micropacs.errors import InvalidIdentifier, NotFound
from micropacs.events import INSTANCE_STORED, PATIENT
from micropacs.ports import Catalog, Query
from micropacs.read_barrier import ReadBarrier, Scope

NOT_MATCHED = {
    SPECIFIC_CHARACTER_SET,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    INSTANCE_AVAILABILITY,
}
"""Keys of an identifier that say how to answer, not what to match (PS3.4 C.4.1.1.3)."""


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
    for tag, key in identifier.items():
        if key.get("vr") != "UI":
            continue
        for value in text_of(key):
            if value and value != "*" and not is_valid_uid(value):
                raise InvalidIdentifier(f"({tag[:4]},{tag[4:]}) holds something that is not a UID")


def scope_of(identifier: DicomJson) -> Scope:
    """What a read of ``identifier``'s matches waits for at the read barrier: the stored
    instances of the studies it names by UID (of every study when it names none), and every
    patient change (they rewrite what the catalog answers)."""
    studies = [
        value.strip() for value in text_of(identifier.get(STUDY_INSTANCE_UID), skip_blank=True)
    ]
    named = studies if studies and all(is_valid_uid(study) for study in studies) else None
    return {INSTANCE_STORED: named, PATIENT: None}


def at_image_level(identifier: DicomJson) -> DicomJson:
    """``identifier`` asked at the IMAGE level (every instance under what it names)."""
    return {**identifier, QUERY_RETRIEVE_LEVEL: element("CS", Level.IMAGE.value)}


def metadata_of(found: list[DicomJson]) -> list[DicomJson]:
    """IMAGE-level answers as WADO-RS metadata (PS3.18 10.4.1.1.2): without the
    Query/Retrieve Level; NotFound when there is none."""
    if not found:
        raise NotFound("no such instances in the archive")
    return [{t: e for t, e in record.items() if t != QUERY_RETRIEVE_LEVEL} for record in found]


class QueryService:
    """Answers queries at every level from the catalog; reads wait at ``barrier`` (as
    ``reader`` on its metrics) when there is one."""

    def __init__(
        self,
        catalog: Catalog,
        settings: QuerySettings,
        ae_title: str,
        barrier: ReadBarrier | None = None,
        reader: str = "query",
    ) -> None:
        self._catalog = catalog
        self._settings = settings
        self._ae_title = ae_title
        self._barrier = barrier
        self._reader = reader

    @property
    def max_results(self) -> int:
        """The most answers one query returns (MICROPACS_QUERY__MAX_RESULTS)."""
        return self._settings.max_results

    async def find(
        self,
        identifier: DicomJson,
        *,
        limit: int = 0,
        offset: int = 0,
        include_all: bool = False,
        study_root: bool = False,
    ) -> list[DicomJson]:
        """Every match of ``identifier`` as a response holding the requested keys
        (and, with ``include_all``, every attribute the catalog holds: QIDO-RS
        ``includefield=all`` and WADO-RS metadata).

        ``study_root`` queries the Study Root model, which has no PATIENT level
        (PS3.4 C.6.2.1).
        """
        level = level_of(identifier)
        if study_root and level is Level.PATIENT:
            raise InvalidIdentifier("the Study Root model has no PATIENT level; query STUDY")
        check_uids(identifier)
        keys = {
            tag: key
            for tag, key in identifier.items()
            if tag not in NOT_MATCHED and not tag.startswith("0000")
        }
        cap = self._settings.max_results
        query = Query(
            level=level,
            identifier=keys,
            limit=min(limit, cap) if limit else cap,
            offset=offset,
            case_insensitive_pn=self._settings.case_insensitive_pn,
            max_examined=self._settings.max_examined,
        )

        async def matches() -> list[DicomJson]:
            return [found async for found in self._catalog.query(query)]

        if self._barrier is None:
            found = await matches()
        else:  # what was stored before this query, it finds
            found = await self._barrier.read(self._reader, scope_of(identifier), matches)
        return [self._response(level, identifier, keys, each, include_all) for each in found]

    async def metadata(self, identifier: DicomJson) -> list[DicomJson]:
        """Every attribute the catalog holds of each instance under one study, series or
        instance (WADO-RS metadata, PS3.18 10.4.1.1.2); NotFound when there is none."""
        return metadata_of(await self.find(at_image_level(identifier), include_all=True))

    def _response(
        self,
        level: Level,
        identifier: DicomJson,
        keys: DicomJson,
        found: DicomJson,
        include_all: bool = False,
    ) -> DicomJson:
        response: DicomJson = dict(found) if include_all else {}
        for tag, key in keys.items():
            stored = found.get(tag)
            if stored is None or "Value" not in stored:
                response[tag] = element(key.get("vr", "UN"))
            elif key.get("vr") == "SQ":
                response[tag] = _sequence_subset(key, stored)
            else:
                response[tag] = stored
        for tag, vr in UNIQUE_KEYS[level]:
            if tag not in response and tag in found:
                response[tag] = found[tag]
            response.setdefault(tag, {"vr": vr})
        response[QUERY_RETRIEVE_LEVEL] = element("CS", level.value)
        if RETRIEVE_AE_TITLE in identifier:
            response[RETRIEVE_AE_TITLE] = element("AE", self._ae_title)
        if INSTANCE_AVAILABILITY in identifier:
            response[INSTANCE_AVAILABILITY] = element("CS", "ONLINE")
        return dict(sorted(response.items()))


def _sequence_subset(requested: DicomJson, stored: DicomJson) -> DicomJson:
    """Stored sequence items cut down to the keys of the requested item, if any."""
    items: list[Any] = requested.get("Value") or []
    wanted = items[0] if items else {}
    if not wanted:
        return stored
    subset = [
        {tag: item.get(tag, element(key.get("vr", "UN"))) for tag, key in wanted.items()}
        for item in stored.get("Value", [])
    ]
    return {"vr": "SQ", "Value": subset}
