"""HL7 v2 acknowledgements (HL7 v2.5.1 2.9.2 original mode, 2.15.5 ERR).

python-hl7 builds the ACK from the received MSH (MSA-2 echoes MSH-10); a
refusal adds MSA-3 and an ERR segment with both the ERR-1 of versions 2.3
and 2.4 and the ERR-2 (location), ERR-3 (table 0357 code) and ERR-4
(severity) of 2.5 and later, so a sender of either reads it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.worklist.hl7_message import Hl7Reject, parse_text

ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"


def _control_id() -> str:
    return uuid.uuid4().hex[:20]


def acknowledgement(message: Any, ack_code: str, reject: Hl7Reject | None = None) -> str:
    """The ACK of a parsed python-hl7 message, as text ending in a carriage return."""
    ack = message.create_ack(ack_code, message_id=_control_id())
    if reject is not None:
        ack.segment("MSA").assign_field(ack.escape(reject.text), 3)
        ack.append(_err(ack, reject))
    return str(ack)


def unreadable_acknowledgement(reject: Hl7Reject) -> str:
    """The ACK of a block that holds no readable MSH: MSA-2 empty, the refusal in ERR."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    template = parse_text(f"MSH|^~\\&|||||{now}||ACK|{_control_id()}|P|2.5.1\rMSA|AR|\r")
    template.segment("MSA").assign_field(template.escape(reject.text), 3)
    template.append(_err(template, reject))
    return str(template)


def _err(ack: Any, reject: Hl7Reject) -> Any:
    err = ack.create_segment([ack.create_field(["ERR"])])
    code = str(int(reject.code))
    meaning = reject.code.name.replace("_", " ").capitalize()
    where = reject.location
    if where is not None:
        positions = [where.segment, str(where.sequence), str(where.field or "")]
        if where.component:
            positions += ["", str(where.component)]
        for index, value in enumerate(positions, start=1):
            err.assign_field(value, 2, 1, index)
        for index, value in enumerate(positions[:3], start=1):
            err.assign_field(value, 1, 1, index)
    err.assign_field(code, 1, 1, 4)
    for index, value in enumerate((code, meaning, "HL70357"), start=1):
        err.assign_field(value, 3, 1, index)
    err.assign_field("E", 4)
    err.assign_field(ack.escape(reject.text), 8)
    return err
