"""What the pages show, made from the admin listings' flattened answers, and the searches
they send.

A search form's fields become QIDO-RS-style matching keys (PS3.18 8.3.4) for
:class:`services.admin.browse.Browser`, so the pages match as C-FIND and QIDO-RS do:
the patient name with its wildcards (PS3.4 C.2.2.2.4), dates and date ranges
(C.2.2.2.5), the modality as ModalitiesInStudy. Every text stays Unicode from the form
to the catalog and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from micropacs.errors import InvalidInput

DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
PAGE_SIZE = 25


def dicom_date(text: str, what: str) -> str:
    """``YYYY-MM-DD`` (an HTML date field) or ``YYYYMMDD`` as a DICOM DA value."""
    text = text.strip()
    if not text:
        return ""
    found = DATE.fullmatch(text)
    if found is None:
        raise InvalidInput(f"{what} must be a date such as 2024-01-31, not {text!r}")
    return "".join(found.groups())


def shown_date(value: Any) -> str:
    """A DA value as ``YYYY-MM-DD`` for people (anything else as it is)."""
    text = "" if value is None else str(value)
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if re.fullmatch(r"\d{8}", text) else text


def shown_name(value: Any) -> str:
    """A person name for people: ``Family^Given^Middle`` as ``Family, Given Middle``."""
    family, _, rest = ("" if value is None else str(value)).partition("^")
    given = " ".join(part for part in rest.split("^") if part)
    return f"{family}, {given}" if given else family


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(each) for each in value)
    return str(value)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class StudyFilters:
    """The study search form."""

    name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    accession: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""

    @classmethod
    def of(cls, params: Any) -> StudyFilters:
        """From the query string's fields (missing ones empty)."""
        names = cls.__dataclass_fields__
        return cls(**{name: str(params.get(name, "")).strip()[:64] for name in names})

    def params(self) -> list[tuple[str, str]]:
        """The QIDO-RS matching keys of this search."""
        found: list[tuple[str, str]] = []
        if self.name:
            found.append(("PatientName", self.name))
        if self.patient_id:
            found.append(("PatientID", self.patient_id))
        if self.birth_date:
            found.append(("PatientBirthDate", dicom_date(self.birth_date, "The birth date")))
        if self.accession:
            found.append(("AccessionNumber", self.accession))
        start = dicom_date(self.date_from, "The first study date")
        end = dicom_date(self.date_to, "The last study date")
        if start and end and start > end:
            raise InvalidInput("the first study date is after the last one: swap them")
        if start or end:
            found.append(("StudyDate", start if start == end else f"{start}-{end}"))
        if self.modality:
            found.append(("ModalitiesInStudy", self.modality.upper()))
        return found

    def query_string(self, offset: int) -> str:
        """The search's URL query with another offset (for the pager)."""
        values = {k: v for k, v in self.__dict__.items() if v}
        return "?" + urlencode({**values, "offset": offset})


@dataclass(frozen=True)
class SeriesRow:
    """A series on its study's page."""

    uid: str
    number: str
    modality: str
    description: str
    instances: int
    thumbnail_url: str

    @classmethod
    def of(cls, shown: dict[str, Any], study_uid: str, dicomweb: str) -> SeriesRow:
        """From a series listing's item; ``dicomweb`` is the DICOMweb root URL."""
        uid = _text(shown.get("SeriesInstanceUID"))
        return cls(
            uid=uid,
            number=_text(shown.get("SeriesNumber")),
            modality=_text(shown.get("Modality")),
            description=_text(shown.get("SeriesDescription")),
            instances=_count(shown.get("NumberOfSeriesRelatedInstances")),
            thumbnail_url=f"{dicomweb}/studies/{study_uid}/series/{uid}/thumbnail",
        )


@dataclass(frozen=True)
class StudyRow:
    """A study as a row of the studies table and the head of its page."""

    uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    date: str
    description: str
    accession: str
    modalities: str
    series_count: int
    instances: int
    series: list[SeriesRow] = field(default_factory=list)

    @classmethod
    def of(cls, shown: dict[str, Any]) -> StudyRow:
        """From a study listing's item."""
        return cls(
            uid=_text(shown.get("StudyInstanceUID")),
            patient_name=shown_name(shown.get("PatientName")),
            patient_id=_text(shown.get("PatientID")),
            birth_date=shown_date(shown.get("PatientBirthDate")),
            date=shown_date(shown.get("StudyDate")),
            description=_text(shown.get("StudyDescription")),
            accession=_text(shown.get("AccessionNumber")),
            modalities=_text(shown.get("ModalitiesInStudy")),
            series_count=_count(shown.get("NumberOfStudyRelatedSeries")),
            instances=_count(shown.get("NumberOfStudyRelatedInstances")),
        )
