"""What a query or retrieval of the qr service waits for at the read barrier."""

from __future__ import annotations

from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.dicom.tags import STUDY_INSTANCE_UID
from micropacs.dicom.uids import is_valid_uid
from micropacs.events import INSTANCE_STORED, PATIENT
from micropacs.read_barrier import Scope

READER = "qr"
"""The qr service's label on the read barrier's metrics."""


def scope_of(identifier: DicomJson) -> Scope:
    """The stored instances of the studies ``identifier`` names by UID (of every study when
    it names none), and every patient change (they rewrite what the catalog answers)."""
    studies = [
        value.strip() for value in text_of(identifier.get(STUDY_INSTANCE_UID), skip_blank=True)
    ]
    named = studies if studies and all(is_valid_uid(study) for study in studies) else None
    return {INSTANCE_STORED: named, PATIENT: None}
