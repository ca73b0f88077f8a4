"""HL7 v2 acknowledgements (HL7 v2.5.1 2.9.2 original mode, 2.15.5 ERR).

Every message gets one, however malformed: the ACK's MSH is written from
the received one read tolerantly (a field it lacks is left empty), never by
indexing its parse tree, so no missing field stops the answer. MSA-2 echoes
MSH-10 and MSH-18 is copied, since the ACK is encoded in the message's
character set. A refusal adds MSA-3 and an ERR segment with both the ERR-1 of
versions 2.3 and 2.4 and the ERR-2 (location), ERR-3 (table 0357 code) and
ERR-4 (severity) of 2.5 and later, so a sender of either reads it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.worklist.hl7_message import (
    ACCEPT,
    ERROR,
    REJECT,
    Hl7Message,
    Hl7Reject,
)

__all__ = ["ACCEPT", "ERROR", "REJECT", "acknowledgement", "unreadable_acknowledgement"]

_STANDARD = "\r|~^&"
"""python-hl7's separators of a message with MSH-1 ``|`` and MSH-2 ``^~\\&``."""


def _control_id() -> str:
    return uuid.uuid4().hex[:20]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


class _Writer:
    """Segments in a message's separators, values escaped (HL7 v2.5.1 2.7.1)."""

    def __init__(self, separators: str, escape: str) -> None:
        self.field, self.rep, self.comp, self.sub = (separators[i] for i in range(1, 5))
        self.esc = escape
        self.encoding = f"{self.comp}{self.rep}{escape}{self.sub}"

    def escaped(self, text: str) -> str:
        e = self.esc
        text = text.replace(e, f"{e}E{e}")
        for char, code in ((self.field, "F"), (self.comp, "S"), (self.rep, "R"), (self.sub, "T")):
            text = text.replace(char, f"{e}{code}{e}")
        return text

    def components(self, *values: str) -> str:
        return self.comp.join(self.escaped(v) for v in values).rstrip(self.comp)

    def segment(self, *fields: str) -> str:
        return self.field.join(fields).rstrip(self.field)


def acknowledgement(msg: Hl7Message, ack_code: str, reject: Hl7Reject | None = None) -> str:
    """The ACK of a parsed message, as text ending in a carriage return."""
    message = msg.message
    out = _Writer(message.separators, message.esc)
    trigger = msg.value("MSH", 9, 1, 2)
    kind = out.components("ACK", trigger, "ACK") if trigger else "ACK"
    msh = out.segment(
        "MSH",
        out.encoding,
        msg.raw("MSH", 5),
        msg.raw("MSH", 6),
        msg.raw("MSH", 3),
        msg.raw("MSH", 4),
        _now(),
        "",
        kind,
        _control_id(),
        msg.raw("MSH", 11) or "P",
        msg.raw("MSH", 12) or "2.5.1",
        *[""] * 5,
        msg.raw("MSH", 18),
    )
    return _ack(out, msh, ack_code, msg.value("MSH", 10), reject)


def unreadable_acknowledgement(reject: Hl7Reject, control_id: str = "") -> str:
    """The ACK of a block that cannot be parsed: MSA-2 its MSH-10 as read from the raw bytes
    ("" when there is none), the refusal in ERR."""
    out = _Writer(_STANDARD, "\\")
    msh = out.segment(
        "MSH", out.encoding, "", "", "", "", _now(), "", "ACK", _control_id(), "P", "2.5.1"
    )
    return _ack(out, msh, reject.ack_code, control_id, reject)


def _ack(out: _Writer, msh: str, ack_code: str, control_id: str, reject: Hl7Reject | None) -> str:
    text = out.escaped(reject.text) if reject is not None else ""
    segments = [msh, out.segment("MSA", ack_code, out.escaped(control_id), text)]
    if reject is not None:
        segments.append(_err(out, reject))
    return "\r".join(segments) + "\r"


def _err(out: _Writer, reject: Hl7Reject) -> str:
    code = str(int(reject.code))
    meaning = reject.code.name.replace("_", " ").capitalize()
    where = reject.location
    eld = erl = ""
    if where is not None:
        positions = [where.segment, str(where.sequence), str(where.field or "")]
        erl = out.components(*positions, *(("", str(where.component)) if where.component else ()))
        eld = out.comp.join([*map(out.escaped, positions), code])
    else:
        eld = out.comp * 3 + code
    table = out.components(code, meaning, "HL70357")
    return out.segment("ERR", eld, erl, table, "E", "", "", "", out.escaped(reject.text))
