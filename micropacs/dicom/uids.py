"""UID validation (PS3.5 9.1).

A UID is at most 64 characters of digits and dots; each component is a
number without leading zeros. UIDs become object keys and query values, so
nothing else may pass: no path or operator injection through a UID.
"""

from __future__ import annotations

import re

from micropacs.errors import InvalidUid

PATTERN = r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
"""What a UID matches, whole (its length apart): numbers without leading zeros, dots between."""
_UID = re.compile(PATTERN)
MAX_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` is a UID as PS3.5 9.1 defines it (padding already removed)."""
    return 0 < len(value) <= MAX_LENGTH and _UID.fullmatch(value) is not None


def require_uid(value: object, name: str) -> str:
    """``value`` as a valid UID, or :class:`~micropacs.errors.InvalidUid` naming ``name``."""
    if value is None or (isinstance(value, str) and not value.strip("\x00 ")):
        raise InvalidUid(f"{name} is missing")
    text = str(value).rstrip("\x00 ")
    if not is_valid_uid(text):
        raise InvalidUid(
            f"{name} is not a valid UID (PS3.5 9.1: digits and dots, at most {MAX_LENGTH})"
        )
    return text
