"""Which HL7 v2 messages the worklist takes, and the events each becomes.

MSH is checked first, as HL7 v2.5.1 2.9.2 orders it: the version (MSH-12,
203), the processing ID (MSH-11, 202), the message type (MSH-9, 200) and its
trigger event (201), each refused AR; then the message is mapped and refused
(AE) for a missing segment or field. Every event names the topic it is published on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from micropacs import events
from micropacs.events import (
    PatientMerged,
    PatientUpdated,
    WorklistItemPut,
    WorklistItemStatus,
)
from services.worklist.hl7_message import ErrorCode, Hl7Context, Hl7Message, Hl7Reject, Location
from services.worklist.hl7_orders import order_events
from services.worklist.hl7_patients import patient_updated, patients_merged

Hl7Event = WorklistItemPut | WorklistItemStatus | PatientUpdated | PatientMerged
Mapping = Callable[[Hl7Message, Hl7Context], Sequence[Hl7Event]]

VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"})
"""MSH-12 versions read: IHE Scheduled Workflow uses 2.3.1 (ORM) and 2.5.1 (OMI); later
versions only add fields."""

PROCESSING_IDS = frozenset({"P", "D"})
"""MSH-11: production and debugging; training messages (T) never reach a worklist."""

MESSAGES: dict[str, dict[str, Mapping]] = {
    "ORM": {"O01": order_events},
    "OMI": {"O23": order_events},
    "ADT": {
        "A01": patient_updated,
        "A04": patient_updated,
        "A08": patient_updated,
        "A40": patients_merged,
    },
}
"""MSH-9.1 message code -> MSH-9.2 trigger event -> its mapping."""

TYPES = frozenset(
    f"{code}^{trigger}" for code, triggers in MESSAGES.items() for trigger in triggers
)
"""The message types taken, e.g. "ORM^O01": the only values of a metric label."""


def topic_of(event: Hl7Event) -> str:
    """The topic an event is published on."""
    if isinstance(event, PatientUpdated | PatientMerged):
        return events.PATIENT
    return events.WORKLIST


def events_of(msg: Hl7Message, context: Hl7Context | None = None) -> Sequence[Hl7Event]:
    """The events of one message, or Hl7Reject naming what is refused."""
    version = msg.version
    if version not in VERSIONS:
        where = Location("MSH", 12)
        code = ErrorCode.UNSUPPORTED_VERSION_ID if version else ErrorCode.REQUIRED_FIELD_MISSING
        raise Hl7Reject(code, f"version {version or '(none)'} not supported", where)
    if msg.processing_id.upper() not in PROCESSING_IDS:
        where = Location("MSH", 11)
        raise Hl7Reject(ErrorCode.UNSUPPORTED_PROCESSING_ID, "processing ID not P or D", where)
    code_of, trigger = msg.type.split("^", 1)
    triggers = MESSAGES.get(code_of.upper())
    if triggers is None:
        raise Hl7Reject(
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "message type not supported (ORM, OMI, ADT)",
            Location("MSH", 9, 1),
        )
    mapping = triggers.get(trigger.upper())
    if mapping is None:
        raise Hl7Reject(
            ErrorCode.UNSUPPORTED_EVENT_CODE,
            f"trigger event not supported for {code_of.upper()}",
            Location("MSH", 9, 2),
        )
    return mapping(msg, context or Hl7Context())
