"""Attribute matching for C-FIND and QIDO-RS, as PS3.4 C.2.2.2 defines it.

A stored record (DICOM JSON) matches an identifier (DICOM JSON) when every
matching key of the identifier matches. Each key becomes a condition:

* :class:`Universal` - no value, or ``*`` alone (C.2.2.2.3): matches anything;
* :class:`Single` - one value (C.2.2.2.1), exact and case-sensitive, except
  person names when the documented option ``case_insensitive_pn`` is on;
* :class:`Wildcard` - ``*`` any run of characters, ``?`` one (C.2.2.2.4),
  not for dates, times, UIDs or numbers;
* :class:`Range` - ``A-B``, ``A-`` or ``-B`` of dates, times or datetimes
  (C.2.2.2.5), partial times covering what they name (``-1015`` reaches
  10:15:59.999999);
* :class:`UidList` - several UIDs, any of which may match (C.2.2.2.2);
* :class:`AnyOf` - several values of another VR (e.g. ModalitiesInStudy
  ``CT\\MR``), any of which may match;
* :class:`SequenceMatch` - a sequence key with one item: some stored item
  must match all the item's keys (C.2.2.2.6).

A stored attribute that is absent or empty matches only universal matching;
a multi-valued stored attribute matches if any of its values does.
Datetime ranges compare the values with their UTC offsets removed.

Wildcard matching takes time linear in the pattern and the value (times the
length of a piece holding ``?``), never exponential: the pattern is cut at
its ``*`` into fixed-length pieces, the first must start the value, the last
must end it, and each one between is found leftmost after the one before,
which finds a match whenever there is one. Patterns longer than
:data:`MAX_PATTERN_LENGTH` or with more than :data:`MAX_STARS` ``*`` are
refused (:class:`~micropacs.errors.InvalidIdentifier`).

Matching is linear per record, but a query on attributes without an index
reads every record: :class:`Budget` bounds how many a query may read and
throw away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, text_of
from micropacs.errors import InvalidIdentifier, QueryTooBroad

IGNORED = {
    tags.SPECIFIC_CHARACTER_SET,
    tags.QUERY_RETRIEVE_LEVEL,
    tags.RETRIEVE_AE_TITLE,
    tags.INSTANCE_AVAILABILITY,
    tags.STORAGE_MEDIA_FILE_SET_ID,
    tags.STORAGE_MEDIA_FILE_SET_UID,
}
"""Keys of an identifier that are never matching keys: they describe the query or where
instances are, not the instances (PS3.4 C.4.1.1.3)."""
NUMERIC_VRS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}
DATE_TIME_VRS = {"DA", "TM", "DT"}
MAX_PATTERN_LENGTH = 256
"""The longest wildcard pattern accepted: four times the 64 characters of a LO
value or a PN component group (PS3.5 6.2), enough for any real query."""
MAX_STARS = 32
"""The most ``*`` a wildcard pattern may hold."""


@dataclass(frozen=True)
class Universal:
    """Matches every value, present or not (C.2.2.2.3)."""


@dataclass(frozen=True)
class Single:
    """Matches one value exactly (C.2.2.2.1)."""

    value: str


@dataclass(frozen=True)
class Wildcard:
    """Matches a pattern with ``*`` and ``?`` (C.2.2.2.4)."""

    pattern: str


@dataclass(frozen=True)
class Range:
    """Matches dates, times or datetimes between two bounds, either open (C.2.2.2.5)."""

    low: str | None
    high: str | None


@dataclass(frozen=True)
class UidList:
    """Matches any of several UIDs (C.2.2.2.2)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class AnyOf:
    """Matches when any of several conditions does (a multi-valued key of another VR)."""

    conditions: tuple[Single | Wildcard | Range, ...]


@dataclass(frozen=True)
class SequenceMatch:
    """Matches when some item of a stored sequence matches ``item`` (C.2.2.2.6)."""

    item: DicomJson


Condition = Union[Universal, Single, Wildcard, Range, UidList, AnyOf, SequenceMatch]  # noqa: UP007


def normal_pn(text: str) -> str:
    """A person name without padding or trailing empty components (PS3.5 6.2.1.1)."""
    return text.strip().rstrip("^ ").strip()


def normal_date(text: str) -> str:
    """A DA value as compared: the digits of YYYYMMDD (the old YYYY.MM.DD accepted, PS3.5 6.2)."""
    return text.strip().replace(".", "")[:8]


def _one(text: str, vr: str) -> Single | Wildcard | Range | Universal:
    text = text.strip()
    if not text or (vr not in NUMERIC_VRS and text.strip("*") == ""):
        return Universal()
    if vr in DATE_TIME_VRS:
        if _is_range(text, vr):
            low, _, high = text.partition("-") if vr != "DT" else _split_dt_range(text)
            return Range(low.strip() or None, high.strip() or None)
        return Single(text)
    if vr in NUMERIC_VRS or vr == "UI":
        return Single(text)
    if "*" in text or "?" in text:
        return wildcard(normal_pn(text) if vr == "PN" else text)
    return Single(normal_pn(text) if vr == "PN" else text)


def wildcard(pattern: str) -> Wildcard:
    """The condition of a wildcard ``pattern`` (C.2.2.2.4), refused beyond the caps.

    Raises:
        InvalidIdentifier: the pattern is longer than :data:`MAX_PATTERN_LENGTH`
            characters or holds more than :data:`MAX_STARS` ``*``.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidIdentifier(
            f"a wildcard pattern may hold at most {MAX_PATTERN_LENGTH} characters,"
            f" not {len(pattern)}"
        )
    stars = pattern.count("*")
    if stars > MAX_STARS:
        raise InvalidIdentifier(f"a wildcard pattern may hold at most {MAX_STARS} '*', not {stars}")
    return Wildcard(pattern)


def _is_range(text: str, vr: str) -> bool:
    if vr == "DT":
        return _split_dt_range(text) != (text, "", "")
    return "-" in text


def _split_dt_range(text: str) -> tuple[str, str, str]:
    """Split a DT range; a '-' right after 14+ digits may be a UTC offset, not the separator."""
    match = re.fullmatch(r"([0-9.]*(?:[+-][0-9]{4})?)-([0-9.]*(?:[+-][0-9]{4})?)", text)
    if match is None:
        return text, "", ""
    return match.group(1), "-", match.group(2)


def condition(element: DicomJson) -> Condition:
    """The condition one identifier element (``{"vr": …, "Value": […]}``) stands for."""
    vr = str(element.get("vr", "UN"))
    if vr == "SQ":
        items = element.get("Value") or []
        if not items or not isinstance(items[0], dict) or not matching_keys(items[0]):
            return Universal()
        if len(items) > 1:
            raise InvalidIdentifier("a sequence matching key holds exactly one item")
        return SequenceMatch(items[0])
    texts = text_of(element, skip_blank=True)
    if not texts:
        return Universal()
    if vr == "UI":
        uids = tuple(t.strip() for t in texts)
        return (
            Universal() if uids == ("*",) else UidList(uids) if len(uids) > 1 else Single(uids[0])
        )
    conditions = [_one(t, vr) for t in texts]
    if any(isinstance(c, Universal) for c in conditions):
        return Universal()
    if len(conditions) == 1:
        return conditions[0]
    return AnyOf(tuple(c for c in conditions if not isinstance(c, Universal)))


def matching_keys(
    identifier: DicomJson, *, case_insensitive_pn: bool = False
) -> dict[str, Condition]:
    """The identifier's matching keys: every key whose condition is not universal.

    ``case_insensitive_pn`` changes how names compare, not which keys match;
    it is accepted so pre-filters can pass their query options through.
    """
    keys: dict[str, Condition] = {}
    for tag, element in identifier.items():
        if tag in IGNORED or tag.startswith(("0000", "0002")) or not isinstance(element, dict):
            continue
        found = condition(element)
        if not isinstance(found, Universal):
            keys[tag] = found
    return keys


def literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first ``*`` or ``?``."""
    match = re.search(r"[*?]", pattern)
    return pattern if match is None else pattern[: match.start()]


@lru_cache(maxsize=1024)
def fold(text: str) -> str:
    """A person name for matching that ignores case (PS3.4 C.2.2.2.1 allows it as an option).

    Case folding, with dotless and dotted I folded to plain i: then names
    equal under :meth:`str.casefold` fold equal, and so do names that a
    case-insensitive regular expression matches character by character.
    """
    return text.casefold().replace("\u0131", "i").replace("\u0307", "")


class _Piece:
    """A run of a pattern between two ``*``: literal characters and ``?``, a fixed length.

    A piece without ``?`` compared case-sensitively is searched with
    :meth:`str.find`; any other is a regular expression of single characters
    (``.`` for ``?``), with neither repetition nor alternation, which the
    regex engine tries at each position in at most its length steps.
    """

    __slots__ = ("_literal", "_regex", "size")

    def __init__(self, text: str, fold: bool) -> None:
        self.size = len(text)
        self._literal: str | None = text if not fold and "?" not in text else None
        self._regex: re.Pattern[str] | None = None
        if self._literal is None:
            parts = ["." if c == "?" else re.escape(c) for c in text]
            self._regex = re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))

    def at(self, text: str, start: int) -> bool:
        """Whether the piece matches ``text`` at ``start``."""
        if self._regex is None:
            return text.startswith(self._literal or "", start)
        return self._regex.match(text, start) is not None

    def find(self, text: str, start: int, end: int) -> int:
        """Where the piece first matches wholly inside ``text[start:end]``, or -1."""
        if self._regex is None:
            return text.find(self._literal or "", start, end)
        found = self._regex.search(text, start, end)
        return -1 if found is None else found.start()


@lru_cache(maxsize=1024)
def _pieces(pattern: str, fold: bool) -> tuple[_Piece, ...]:
    return tuple(_Piece(text, fold) for text in pattern.split("*"))


def wildcard_matches(pattern: str, text: str, *, fold: bool = False) -> bool:
    """Whether ``text`` matches ``pattern``: ``*`` any run, ``?`` one character (C.2.2.2.4).

    ``fold`` compares characters ignoring case, one by one (a person name
    under the ``case_insensitive_pn`` option). Time grows with
    ``len(text) * len(pattern)`` at worst; callers bound the pattern with
    :func:`wildcard`.
    """
    pieces = _pieces(pattern, fold)
    head = pieces[0]
    if len(pieces) == 1:
        return len(text) == head.size and head.at(text, 0)
    tail = pieces[-1]
    end = len(text) - tail.size
    if end < head.size or not head.at(text, 0) or not tail.at(text, end):
        return False
    position = head.size
    for piece in pieces[1:-1]:
        found = piece.find(text, position, end)
        if found < 0:
            return False
        position = found + piece.size
    return True


def _digits(text: str) -> str:
    return re.sub(r"[^0-9.]", "", text)


def _time_bound(text: str, upper: bool) -> str:
    """A TM value as 'HHMMSS.ffffff'; a partial bound covers what it names."""
    text = _digits(text.replace(":", ""))
    whole, _, fraction = text.partition(".")
    if upper:
        whole = whole + "235959"[len(whole) :] if len(whole) < 6 else whole[:6]
        fraction = (fraction + "999999")[:6] if fraction else "999999"
    else:
        whole = (whole + "000000")[:6]
        fraction = (fraction + "000000")[:6]
    return f"{whole}.{fraction}"


def _datetime_bound(text: str, upper: bool) -> str:
    text = re.sub(r"[+-][0-9]{4}$", "", text.strip())
    whole, _, fraction = _digits(text).partition(".")
    full = "99991231235959" if upper else "00000101000000"
    if upper and len(whole) in (4, 6):
        whole += "31" if len(whole) == 6 else "1231"  # a month or year reaches its last day
    whole = whole + full[len(whole) :] if len(whole) < 14 else whole[:14]
    fraction = (fraction + ("999999" if upper else "000000"))[:6]
    return f"{whole}.{fraction}"


def _in_range(value: str, vr: str, low: str | None, high: str | None) -> bool:
    if vr == "DA":
        stored = normal_date(value)
        return (low is None or normal_date(low) <= stored) and (
            high is None or stored <= normal_date(high)
        )
    if vr == "TM":
        stored = _time_bound(value, upper=False)
        return (low is None or _time_bound(low, False) <= stored) and (
            high is None or stored <= _time_bound(high, True)
        )
    stored = _datetime_bound(value, upper=False)
    return (low is None or _datetime_bound(low, False) <= stored) and (
        high is None or stored <= _datetime_bound(high, True)
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _value_matches(value: str, cond: Condition, vr: str, fold: bool) -> bool:
    if isinstance(cond, AnyOf):
        return any(_value_matches(value, c, vr, fold) for c in cond.conditions)
    if isinstance(cond, UidList):
        return value.strip() in cond.values
    if isinstance(cond, Range):
        return _in_range(value, vr, cond.low, cond.high)
    if isinstance(cond, Wildcard):
        stored = normal_pn(value) if vr == "PN" else value.strip()
        return wildcard_matches(cond.pattern, stored, fold=fold and vr == "PN")
    if isinstance(cond, Single):
        if vr in DATE_TIME_VRS:
            return _in_range(value, vr, cond.value, cond.value)
        if vr in NUMERIC_VRS:
            number, wanted = _number(value), _number(cond.value)
            if number is not None and wanted is not None:
                return number == wanted
        if vr == "PN":
            stored = normal_pn(value)
            return stored.casefold() == cond.value.casefold() if fold else stored == cond.value
        return value.strip() == cond.value
    return True


def _key_matches(stored: DicomJson | None, cond: Condition, vr: str, fold: bool) -> bool:
    if isinstance(cond, Universal):
        return True
    if stored is None:
        return False
    if isinstance(cond, SequenceMatch):
        items = stored.get("Value") or []
        return any(
            isinstance(item, dict) and matches(item, cond.item, case_insensitive_pn=fold)
            for item in items
        )
    values = text_of(stored, skip_blank=True)
    return any(_value_matches(v, cond, vr, fold) for v in values)


class Matcher:
    """An identifier parsed once, to test many records against (PS3.4 C.2.2.2)."""

    def __init__(self, identifier: DicomJson, *, case_insensitive_pn: bool = False) -> None:
        self._keys = [
            (tag, cond, str(identifier[tag].get("vr", "UN")))
            for tag, cond in matching_keys(identifier).items()
        ]
        self._fold = case_insensitive_pn

    def __call__(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` (DICOM JSON, or a view of it) matches every matching key."""
        return all(
            _key_matches(record.get(tag), cond, vr, self._fold) for tag, cond, vr in self._keys
        )


def matches(record: DicomJson, identifier: DicomJson, *, case_insensitive_pn: bool = False) -> bool:
    """Whether ``record`` matches every matching key of ``identifier`` (PS3.4 C.2.2.2)."""
    return Matcher(identifier, case_insensitive_pn=case_insensitive_pn)(record)


@dataclass
class Budget:
    """The records one query may read and throw away: candidates that do not match and
    matches skipped for an offset (``limit`` of them; 0 is no bound).

    Both catalogs pre-filter with their indexes, then read each candidate and
    match it here; a key no index holds leaves every record of the level a
    candidate. Spending past the limit raises, so such a query costs at most
    ``limit`` records whatever the archive's size.
    """

    limit: int
    spent: int = 0

    def spend(self, count: int = 1) -> None:
        """Count ``count`` more records thrown away.

        Raises:
            QueryTooBroad: more than ``limit`` records were thrown away in all.
        """
        self.spent += count
        if self.limit and self.spent > self.limit:
            raise QueryTooBroad(self.limit)
