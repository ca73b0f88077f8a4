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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Any

import hl7

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element
from services.worklist.hl7_escape import EscapeError, unescape


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


ACCEPT = "AA"
"""MSA-1 application accept (HL7 table 0008)."""
ERROR = "AE"
"""MSA-1 application error: the content is wrong; sent again unchanged, it fails again."""
REJECT = "AR"
"""MSA-1 application reject: MSH-9, MSH-11 or MSH-12 not taken, or a failure unrelated to
the content (the bus down, an internal error); the sender decides whether to send again."""


class Hl7Reject(Exception):
    """A message refused: answered MSA-1 :attr:`ack_code` with an ERR segment (HL7 v2.5.1 2.9.2).

    The text names fields, never their values: it is logged and sent back.
    """

    def __init__(self, code: ErrorCode, text: str, location: Location | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location

    @property
    def ack_code(self) -> str:
        """AE for an error in the content (codes 100-103), AR for the rest (HL7 v2.5.1 2.9.2:
        an unsupported message type, event, processing ID or version, 200-203, and a failure
        of the receiver, 207)."""
        return ERROR if self.code < ErrorCode.UNSUPPORTED_MESSAGE_TYPE else REJECT


@dataclass(frozen=True)
class Hl7Context:
    """What the mapping of a message needs besides the message."""

    default_issuer: str = ""
    """The Issuer of Patient ID of a PID-3 (or MRG-1) without assigning authority."""
    stations: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Modality, or procedure code (OBR-4.1), -> the Scheduled Station AE Titles of an order
    step that names none."""


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


def name_of(segment: Any) -> str:
    """A segment's name (its field 0)."""
    return str(segment[0])


@dataclass(frozen=True)
class Hl7Message:
    """A parsed message and the character set its text was decoded from.

    Segments are indexed by name once, so reading a field costs the same in
    a message of ten segments or of ten thousand.
    """

    message: Any
    """The python-hl7 :class:`hl7.Message`."""
    charset: str
    """MSH-18 as received, "ASCII" when absent."""
    specific_character_set: str
    """The DICOM Specific Character Set of that repertoire ("" for ASCII)."""

    @cached_property
    def _index(self) -> dict[str, list[Any]]:
        index: dict[str, list[Any]] = {}
        for seg in self.message:
            index.setdefault(name_of(seg), []).append(seg)
        return index

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
        return self._index.get(name, [])

    def first(self, name: str) -> Any:
        """The first segment named ``name``, or None."""
        found = self._index.get(name)
        return found[0] if found else None

    def raw(self, segment: str | Any, field_no: int) -> str:
        """A field as received, separators and escapes included ("" when absent)."""
        seg = self.first(segment) if isinstance(segment, str) else segment
        if seg is None or field_no >= len(seg):
            return ""
        return str(seg[field_no])

    def value(
        self, segment: str | Any, field_no: int, rep: int = 1, comp: int = 1, sub: int = 1
    ) -> str:
        """One value as unescaped text (HL7 v2.5.1 2.7), "" when absent.

        ``segment`` is a segment or the name of the first one of that name.
        A value shorter than the path asked (a field without components) is
        read as its first component, as HL7 2.5.1 2.6.3 allows. An escape
        sequence that cannot be read is refused (102) at the field.
        """
        seg = self.first(segment) if isinstance(segment, str) else segment
        if seg is None or field_no >= len(seg):
            return ""
        if name_of(seg) == "MSH" and field_no <= 2:
            return str(seg[field_no])
        node: Any = seg[field_no]
        for index in (rep, comp, sub):
            if isinstance(node, str):
                return self._unescape(node, seg, field_no, comp) if index == 1 else ""
            if index > len(node):
                return ""
            node = node[index - 1]
        while not isinstance(node, str):
            node = node[0] if len(node) else ""
        return self._unescape(node, seg, field_no, comp)

    def repetitions(self, segment: Any, field_no: int) -> int:
        """How many repetitions ``field_no`` of ``segment`` has (0 when empty)."""
        if field_no >= len(segment):
            return 0
        node = segment[field_no]
        if isinstance(node, str):
            return 1 if node else 0
        return len(node) if str(node) else 0

    def location(self, segment: Any, field_no: int = 0, comp: int = 0) -> Location:
        """Where ``segment`` (one of this message's) and its field are (ERR-2)."""
        name = name_of(segment)
        same = self._index.get(name, [])
        sequence = next((i for i, seg in enumerate(same, start=1) if seg is segment), 1)
        return Location(name, field_no, comp if comp > 1 else 0, sequence)

    def _unescape(self, text: str, seg: Any, field_no: int, comp: int) -> str:
        message = self.message
        if message.esc not in text:
            return text
        try:
            return unescape(text, message.separators, message.esc, self.codec)
        except EscapeError as exc:
            where = self.location(seg, field_no, comp)
            raise Hl7Reject(ErrorCode.DATA_TYPE_ERROR, f"{where}: {exc}", where) from exc


def msh_field(block: bytes, field_no: int) -> bytes:
    """MSH-``field_no`` (3 and later) read from the raw bytes, before any decoding (b"" when
    absent), so a block that cannot be parsed still names its character set and control ID."""
    first = block.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        return b""
    fields = first.split(first[3:4])
    return fields[field_no - 1] if len(fields) >= field_no else b""


def charset_of(block: bytes) -> str:
    """MSH-18's first repetition, read from the raw bytes ("" when absent)."""
    repetition = block[5:6] if block.startswith(b"MSH") else b"~"
    return msh_field(block, 18).split(repetition or b"~", 1)[0].decode("latin-1").strip()


def parse_text(text: str) -> Any:
    """python-hl7's parse of one message, or Hl7Reject 100 when it cannot be parsed."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "the message does not begin with MSH")
    try:
        return hl7.parse(text)
    except Exception as exc:  # python-hl7 raises ValueError, IndexError, AssertionError …
        raise Hl7Reject(ErrorCode.SEGMENT_SEQUENCE_ERROR, "the message cannot be parsed") from exc


def decode(block: bytes) -> Hl7Message:
    """Decode one MLLP block by its MSH-18 character set and parse it.

    Refuses (AE) a character set of table 0211 we do not read (103) and bytes
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
