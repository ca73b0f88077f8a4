"""Finding patients, studies, series and instances: the same matching as C-FIND and
QIDO-RS (:mod:`micropacs.query`, a QIDO-RS identifier from :func:`micropacs.dicomweb.qido.parse`),
answers flattened to ``{keyword: value}`` for people and pages.

Studies are sorted by study date and time, newest first, before a page is cut: a
listing reads every match (up to MICROPACS_QUERY__MAX_RESULTS), then pages them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_for_tag

from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.levels import Level
from micropacs.dicomweb import qido
from micropacs.query import QueryService

PATIENT_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)
SERIES_EXTRA = ("SeriesDate", "SeriesTime", "BodyPartExamined", "StudyInstanceUID")
IMAGE_EXTRA = ("SeriesInstanceUID", "StudyInstanceUID")


def flat(record: DicomJson) -> dict[str, Any]:
    """A DICOM JSON record as ``{keyword: value}``: one value as itself, several as a list,
    a person name as its alphabetic group (PS3.18 F.2.2), none as null."""
    shown: dict[str, Any] = {}
    for tag, element in record.items():
        keyword = keyword_for_tag(int(tag, 16)) or tag
        values = [
            value.get("Alphabetic", "") if isinstance(value, dict) else value
            for value in element.get("Value", [])
            if element.get("vr") != "SQ"
        ]
        shown[keyword] = values[0] if len(values) == 1 else (values or None)
    return shown


@dataclass(frozen=True)
class Page:
    """One page of a listing: its items and how many matched (up to the cap)."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def study_uids(self) -> list[str]:
        """The Study Instance UIDs the page shows (for its audit record)."""
        return [str(uid) for each in self.items if (uid := each.get("StudyInstanceUID"))]


class Browser:
    """Listings at every level over a :class:`~micropacs.query.QueryService`."""

    def __init__(self, query: QueryService) -> None:
        self._query = query

    async def find(
        self,
        level: Level,
        params: Iterable[tuple[str, str]],
        fixed: dict[str, str] | None = None,
        extra: Iterable[str] = (),
    ) -> list[DicomJson]:
        """Every match of QIDO-RS-style ``params`` at ``level`` (with ``extra`` keys)."""
        asked = [*params, *(("includefield", keyword) for keyword in extra)]
        parsed = qido.parse(level, asked, fixed)
        return await self._query.find(parsed.identifier, study_root=level is not Level.PATIENT)

    async def studies(self, params: list[tuple[str, str]], limit: int, offset: int) -> Page:
        """A page of the studies matching ``params``, newest first."""
        found = [flat(each) for each in await self.find(Level.STUDY, params)]
        found.sort(key=lambda s: (s.get("StudyDate") or "", s.get("StudyTime") or ""), reverse=True)
        return Page(found[offset : offset + limit], len(found), limit, offset)

    async def patients(self, params: list[tuple[str, str]], limit: int, offset: int) -> Page:
        """A page of the patients matching ``params``, by name."""
        found = [flat(each) for each in await self.find(Level.PATIENT, params, extra=PATIENT_KEYS)]
        found.sort(key=lambda p: (str(p.get("PatientName") or ""), str(p.get("PatientID") or "")))
        return Page(found[offset : offset + limit], len(found), limit, offset)

    async def series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of a study, by series number."""
        fixed = {"StudyInstanceUID": study_uid}
        found = [flat(each) for each in await self.find(Level.SERIES, [], fixed, SERIES_EXTRA)]
        found.sort(key=lambda s: _number(s.get("SeriesNumber")))
        return found

    async def instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """The instances of a series, by instance number."""
        fixed = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        found = [flat(each) for each in await self.find(Level.IMAGE, [], fixed, IMAGE_EXTRA)]
        found.sort(key=lambda i: _number(i.get("InstanceNumber")))
        return found


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
