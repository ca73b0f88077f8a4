"""Scheduling without a RIS: worklist items added, listed and removed by the API and the CLI.

An item is one Modality Worklist item in the DICOM JSON model (PS3.18 F.2,
PS3.4 K.6.1) with exactly one ScheduledProcedureStepSequence item. It is
checked before anything is published: every attribute a tag of the DICOM
dictionary with its own VR, every value valid for that VR and within its
length (PS3.5 6.2), and the attributes a modality needs to pick it
(:data:`REQUIRED`, a station AE title or a modality). A missing
StudyInstanceUID is generated (PS3.5 B.2, a UUID-derived ``2.25`` UID); the
step's status is SCHEDULED unless it says otherwise. :class:`Scheduler`
publishes the item on the worklist topic, durably, before it answers; the
index applies it to the Worklist store, where the worklist C-FIND and the
listing find it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.valuerep import validate_value

from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import BINARY_VRS, DicomJson, element, first_text
from micropacs.dicom.levels import Level
from micropacs.dicom.tags import tag_of
from micropacs.dicomweb import qido
from micropacs.errors import InvalidInput
from micropacs.events import WORKLIST, WorklistItemPut, WorklistItemRemoved
from micropacs.ports import EventBus, Worklist, WorklistItem
from micropacs.read_barrier import ReadBarrier
from services.worklist.mwl import check_identifier
from services.worklist.read_scope import READER, items_scope

SOURCE = "api"
"""The ``source`` of the events the API and the CLI publish."""

REQUIRED = ("PatientID", "PatientName", "AccessionNumber", "RequestedProcedureID")
"""Attributes of the item a modality needs, with a value (PS3.4 K.6.1.2.2)."""
STEP_REQUIRED = ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepID")
"""Attributes of its scheduled step, with a value; and ScheduledStationAETitle or Modality."""
STEP_KEYWORDS = frozenset(
    {
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime",
        "Modality",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepStatus",
    }
)
"""Keys a filter matches inside the scheduled step (sequence matching, PS3.4 C.2.2.2.6)."""
_STEP_TAGS = frozenset(tag_of(keyword) for keyword in STEP_KEYWORDS)
NEW_STATUSES = frozenset({model.SCHEDULED, "ARRIVED", "READY"})
"""The statuses a new item may have (PS3.3 C.4.10.1); the others come from MPPS or HL7."""
MAX_ATTRIBUTES = 1000
"""Attributes in one item, sequences' included: a bound on the work of checking it."""
_NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
_SPS = model.SCHEDULED_PROCEDURE_STEP_SEQUENCE
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _name(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or f"({tag[:4]},{tag[4:]})"


def _reason(exc: ValueError) -> str:
    """pydicom's message without the link it appends."""
    return str(exc).split(" Please see")[0].rstrip(".")


class _Checker:
    """Walks an item once, counting attributes, refusing the first thing wrong."""

    def __init__(self) -> None:
        self.count = 0

    def dataset(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise InvalidInput(f"{where or 'the item'} is not a JSON object of attributes")
        for tag, attribute in data.items():
            self.attribute(tag, attribute, where)

    def attribute(self, tag: Any, attribute: Any, where: str) -> None:
        self.count += 1
        if self.count > MAX_ATTRIBUTES:
            raise InvalidInput(f"the item has more than {MAX_ATTRIBUTES} attributes")
        if not (isinstance(tag, str) and len(tag) == 8 and _is_hex(tag)) or tag != tag.upper():
            raise InvalidInput(f"{where}{tag!r} is not a tag such as 00100010 (PS3.18 F.2.1.1)")
        name = where + _name(tag)
        if int(tag[:4], 16) % 2 == 1:
            raise InvalidInput(f"{name}: private attributes are not kept in worklist items")
        if not isinstance(attribute, dict):
            raise InvalidInput(f"{name} is not an object with a vr (PS3.18 F.2.2)")
        vr = attribute.get("vr")
        try:
            allowed = str(dictionary_VR(int(tag, 16))).split(" or ")
        except KeyError:
            raise InvalidInput(f"{name} is not in the DICOM dictionary") from None
        if vr not in allowed:
            raise InvalidInput(f"{name} has vr {vr!r}, the dictionary says {' or '.join(allowed)}")
        if "BulkDataURI" in attribute or "InlineBinary" in attribute or vr in BINARY_VRS:
            raise InvalidInput(f"{name}: binary values are not kept in worklist items")
        unknown = set(attribute) - {"vr", "Value"}
        if unknown:
            raise InvalidInput(f"{name} has unknown members {sorted(unknown)}")
        values = attribute.get("Value", [])
        if not isinstance(values, list):
            raise InvalidInput(f"{name}: Value must be an array (PS3.18 F.2.4)")
        for value in values:
            self.value(str(vr), value, name)

    def value(self, vr: str, value: Any, name: str) -> None:
        if vr == "SQ":
            self.dataset(value, f"{name} > ")
            return
        if value is None:
            return
        if vr == "PN":
            if not isinstance(value, dict) or set(value) - set(_PN_GROUPS):
                raise InvalidInput(f"{name}: a PN value is an object of {', '.join(_PN_GROUPS)}")
            for group in value.values():
                self.text("PN", group, name)
        elif vr in _NUMBER_VRS or vr in ("IS", "DS"):
            number = value
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidInput(f"{name}: {value!r} is not a number")
            if vr in _NUMBER_VRS and not isinstance(value, int | float):
                raise InvalidInput(f"{name}: {value!r} is not a number")
            self.checked(vr, number, name)
        else:
            self.text(vr, value, name)

    def text(self, vr: str, value: Any, name: str) -> None:
        if not isinstance(value, str):
            raise InvalidInput(f"{name}: {value!r} is not a string")
        if "\\" in value and vr not in ("LT", "ST", "UT"):
            raise InvalidInput(f"{name}: a backslash separates values; send them as an array")
        if any(ord(c) < 0x20 and c not in "\r\n\t\x0c\x1b" for c in value):
            raise InvalidInput(f"{name} holds control characters")
        self.checked(vr, value, name)

    def checked(self, vr: str, value: Any, name: str) -> None:
        try:
            validate_value(vr, value, config.RAISE)
        except ValueError as exc:
            raise InvalidInput(f"{name}: {_reason(exc)} (PS3.5 6.2)") from None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789ABCDEFabcdef" for c in text)


def checked_item(data: Any) -> DicomJson:
    """``data`` as a worklist item ready to publish, or InvalidInput saying what is wrong.

    Adds a StudyInstanceUID when absent and the step's status SCHEDULED when absent.
    """
    checker = _Checker()
    checker.dataset(data, "")
    item: DicomJson = dict(data)
    sps = item.get(_SPS)
    steps = (sps or {}).get("Value") or []
    if len(steps) != 1:
        raise InvalidInput("ScheduledProcedureStepSequence must hold exactly one item")
    step: DicomJson = dict(steps[0])
    missing = [k for k in REQUIRED if not first_text(item, tag_of(k))]
    missing += [
        f"ScheduledProcedureStepSequence > {k}"
        for k in STEP_REQUIRED
        if not first_text(step, tag_of(k))
    ]
    if not first_text(step, model.SCHEDULED_STATION_AE_TITLE) and not first_text(
        step, tags.MODALITY
    ):
        missing.append("ScheduledProcedureStepSequence > ScheduledStationAETitle or Modality")
    if missing:
        raise InvalidInput(f"missing, or without a value: {', '.join(missing)}")
    status = first_text(step, model.SCHEDULED_STEP_STATUS) or model.SCHEDULED
    if status not in NEW_STATUSES:
        raise InvalidInput(
            f"a new item's ScheduledProcedureStepStatus is one of {', '.join(sorted(NEW_STATUSES))}"
        )
    step[model.SCHEDULED_STEP_STATUS] = element("CS", status)
    item[_SPS] = {"vr": "SQ", "Value": [dict(sorted(step.items()))]}
    if not first_text(item, tags.STUDY_INSTANCE_UID):
        item[tags.STUDY_INSTANCE_UID] = element("UI", f"2.25.{uuid.uuid4().int}")
    return dict(sorted(item.items()))


@dataclass(frozen=True)
class Filters:
    """A listing's matching keys (PS3.4 C.2.2.2) and its page."""

    identifier: DicomJson
    limit: int = 0
    offset: int = 0


def parse_filters(params: Iterable[tuple[str, str]]) -> Filters:
    """Query parameters as matching keys: ``{keyword or tag}={value}`` as QIDO-RS has them
    (PS3.18 8.3.4.1: wildcards, ranges, UID lists), ``status`` for the step's
    ScheduledProcedureStepStatus, ``limit`` and ``offset``; step attributes match inside
    ScheduledProcedureStepSequence."""
    given: list[tuple[str, str]] = []
    for name, value in params:
        if name.lower() == "status":
            name = "ScheduledProcedureStepStatus"
        elif name.lower() in ("includefield", "fuzzymatching"):
            raise InvalidInput(f"{name} is not a filter of worklist items")
        given.append((name, value))
    parsed = qido.parse(Level.STUDY, given)
    identifier: DicomJson = {}
    step: DicomJson = {}
    for tag, key in parsed.identifier.items():
        if "Value" not in key or tag == tags.QUERY_RETRIEVE_LEVEL:
            continue  # QIDO-RS's default return keys, and keys given empty: no filter
        if tag == _SPS:
            raise InvalidInput("filter on the step's attributes by their own keywords")
        (step if tag in _STEP_TAGS else identifier)[tag] = key
    if step:
        identifier[_SPS] = {"vr": "SQ", "Value": [step]}
    check_identifier(identifier)  # UIDs as PS3.5 9.1 has them, as the C-FIND's
    return Filters(identifier=identifier, limit=parsed.limit, offset=parsed.offset)


class Scheduler:
    """Adds, finds and removes worklist items: the events published, the store read."""

    def __init__(
        self,
        bus: EventBus,
        worklist: Worklist,
        max_results: int,
        barrier: ReadBarrier | None = None,
    ) -> None:
        self._bus = bus
        self._worklist = worklist
        self._max_results = max_results
        self._barrier = barrier

    async def add(self, data: Any) -> WorklistItem:
        """Check ``data``, give it an id and publish it durably (WorklistItemPut)."""
        dataset = checked_item(data)
        item = WorklistItem(item_id=uuid.uuid4().hex, dataset=dataset)
        event = WorklistItemPut(item_id=item.item_id, dataset=dataset, source=SOURCE)
        await self._bus.publish(WORKLIST, event.key, event.to_bytes())
        return item

    async def item(self, item_id: str) -> WorklistItem | None:
        """The item of that id as the store has it, or None."""
        await self._caught_up([item_id])
        return await self._worklist.item(item_id)

    async def remove(self, item_id: str) -> bool:
        """Publish the removal of a stored item (WorklistItemRemoved); False if unknown."""
        if await self.item(item_id) is None:
            return False
        event = WorklistItemRemoved(item_id=item_id, source=SOURCE)
        await self._bus.publish(WORKLIST, event.key, event.to_bytes())
        return True

    async def find(self, filters: Filters) -> list[WorklistItem]:
        """The stored items matching ``filters``, whatever their status unless one is asked,
        at most ``max_results``; ordered by scheduled start."""
        limit = min(filters.limit or self._max_results, self._max_results)
        await self._caught_up()
        found = self._worklist.find_items(filters.identifier, limit=filters.offset + limit)
        items: list[WorklistItem] = []
        skipped = 0
        async with aclosing(found):
            async for item in found:
                if skipped < filters.offset:
                    skipped += 1
                    continue
                items.append(item)
                if len(items) >= limit:
                    break
        return items

    async def _caught_up(self, item_ids: list[str] | None = None) -> None:
        """Wait until the index has applied what was acknowledged before (bounded)."""
        if self._barrier is not None:
            await self._barrier.wait(READER, items_scope(item_ids))


def as_json(item: WorklistItem) -> dict[str, Any]:
    """An item as the API and the CLI show it: its id, status, last change and dataset."""
    return {
        "id": item.item_id,
        "status": model.keys_of(item.dataset).status,
        "updated_at": item.updated_at,
        "dataset": item.dataset,
    }
