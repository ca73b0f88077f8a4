"""One received HL7 v2 message: decoded by its MSH-18 character set, parsed, refused.

HL7 v2.5.1 chapter 2 defines the message: segments separated by carriage
returns, the field, component, repetition, escape and subcomponent separators
in MSH-1 and MSH-2, the character set in MSH-18 (table 0211), and a receiver
that refuses a message answers an acknowledgement whose ERR segment names the
field and an HL7 error code of table 0357 (2.15.5). :class:`Hl7Reject` is that
refusal; :func:`decode` reads the bytes as MSH-18 says before python-hl7
parses them, and :class:`Hl7Message` reads any field as unescaped text
("" when absent), so no mapping indexes the parse tree itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import hl7

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element


class ErrorCode(IntEnum):
    """HL7 table 0357, message error condition codes (HL7 v2.5.1 2.15.5.3)."""

    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    APPLICATION_INTERNAL_ERROR = 207


@dataclass(frozen=True)
class Location:
    """Where an error is (ERL data type, ERR-2): segment, its sequence, field, component."""

    segment: str
    field: int = 0
    component: int = 0
    sequence: int = 1

    def __str__(self) -> str:
        text = f"{self.segment}-{self.field}" if self.field else self.segment
        return f"{text}.{self.component}" if self.component else text


class Hl7Reject(Exception):
    """A message refused: answered MSA-1 ``ack_code`` with an ERR segment (HL7 v2.5.1 2.9.2).

    ``AR`` (application reject) for a message that will never be accepted as
    sent, ``AE`` (application error) when nothing was acknowledged and sending
    it again later may succeed. The text names fields, never their values: it
    is logged and sent back.
    """

    def __init__(
        self, code: ErrorCode, text: str, location: Location | None = None, ack_code: str = "AR"
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location
        self.ack_code = ack_code


CHARSETS: dict[str, tuple[str, str]] = {
    "ASCII": ("ascii", ""),
    "8859/1": ("iso8859-1", "ISO_IR 100"),
    "8859/2": ("iso8859-2", "ISO_IR 101"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
    "UTF-8": ("utf-8", "ISO_IR 192"),
}
"""MSH-18 (HL7 table 0211) -> (Python codec, DICOM Specific Character Set, PS3.3 C.12.1.1.2).

"UTF-8" is not in table 0211 but is what several senders write.
"""

MSH_CHARSET = Location("MSH", 18)


@dataclass(frozen=True)
class Hl7Message:
    """A parsed message and the character set its text was decoded from."""

    message: Any
    """The python-hl7 :class:`hl7.Message`."""
    charset: str
    """MSH-18 as received, "ASCII" when absent."""
    specific_character_set: str
    """The DICOM Specific Character Set of that repertoire ("" for ASCII)."""

    @property
    def codec(self) -> str:
        """The Python codec of the message's character set."""
        return CHARSETS.get(self.charset.upper(), ("ascii", ""))[0]

    @property
    def type(self) -> str:
        """MSH-9 message code and trigger event, e.g. "ORM^O01"."""
        return f"{self.value('MSH', 9, 1, 1)}^{self.value('MSH', 9, 1, 2)}"

    @property
    def version(self) -> str:
        """MSH-12 version ID."""
        return self.value("MSH", 12)

    @property
    def processing_id(self) -> str:
        """MSH-11 processing ID (P production, D debugging, T training)."""
        return self.value("MSH", 11)

    def segments(self, name: str) -> list[Any]:
        """Every segment named ``name``, in message order."""
        return [seg for seg in self.message if str(seg[0][0]) == name]

    def value(
        self, segment: str | Any, field: int, rep: int = 1, comp: int = 1, sub: int = 1
    ) -> str:
        """One value as unescaped text (HL7 v2.5.1 2.7), "" when absent.

        ``segment`` is a segment or the name of the first one of that name.
        A value shorter than the path asked (a field without components) is
        read as its first component, as HL7 2.5.1 2.6.3 allows.
        """
        seg = segment
        if isinstance(segment, str):
            found = self.segments(segment)
            if not found:
                return ""
            seg = found[0]
        if field >= len(seg):
            return ""
        if str(seg[0][0]) == "MSH" and field <= 2:
            return str(seg[field])
        node: Any = seg[field]
        for index in (rep, comp, sub):
            if isinstance(node, str):
                return self._unescape(node) if index == 1 else ""
            if index > len(node):
                return ""
            node = node[index - 1]
        while not isinstance(node, str):
            node = node[0] if len(node) else ""
        return self._unescape(node)

    def repetitions(self, segment: Any, field: int) -> int:
        """How many repetitions ``field`` of ``segment`` has (0 when empty)."""
        if field >= len(segment):
            return 0
        node = segment[field]
        if isinstance(node, str):
            return 1 if node else 0
        return len(node) if str(node) else 0

    def _unescape(self, text: str) -> str:
        return str(self.message.unescape(text)) if "\\" in text else text


def charset_of(block: bytes) -> str:
    """MSH-18's first repetition, read from the raw bytes ("" when absent)."""
    first = block.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        return ""
    separator, repetition = first[3:4], first[5:6]
    fields = first.split(separator)
    if len(fields) <= 17:
        return ""
    return fields[17].split(repetition, 1)[0].decode("latin-1").strip()


def parse_text(text: str) -> Any:
    """python-hl7's parse of one message, or Hl7Reject 100 when it has no MSH first."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "the message does not begin with MSH")
    try:
        return hl7.parse(text)
    except (ValueError, IndexError, hl7.ParseException) as exc:
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "the message cannot be parsed") from exc


def decode(block: bytes) -> Hl7Message:
    """Decode one MLLP block by its MSH-18 character set and parse it.

    Refuses (AR) a character set of table 0211 we do not read (103) and bytes
    that are not text in the one declared (102); without MSH-18 the message
    is ASCII (HL7 v2.5.1 2.15.9.18), so a name is never silently garbled.
    """
    declared = charset_of(block)
    codec, dicom_charset = CHARSETS.get(declared.upper() or "ASCII", ("", ""))
    if not codec:
        raise Hl7Reject(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            "character set not supported (ASCII, 8859/1, 8859/2, UNICODE UTF-8)",
            MSH_CHARSET,
        )
    try:
        text = block.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Reject(
            ErrorCode.DATA_TYPE_ERROR,
            f"the message is not {declared or 'ASCII'} text",
            MSH_CHARSET,
        ) from exc
    return Hl7Message(parse_text(text), declared or "ASCII", dicom_charset)


def with_charset(dataset: DicomJson, message: Hl7Message) -> DicomJson:
    """``dataset`` with the Specific Character Set of the message's repertoire, if not ASCII."""
    if message.specific_character_set:
        dataset[tags.SPECIFIC_CHARACTER_SET] = element("CS", message.specific_character_set)
    return dataset
