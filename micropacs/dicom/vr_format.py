"""The value formats of the date and time VRs (PS3.5 6.2, Table 6.2-1).

DA is ``YYYYMMDD``; TM is ``HH[MM[SS[.F{1,6}]]]`` with HH 00-23, MM 00-59
and SS 00-60 (a leap second). The old ACR-NEMA forms (``YYYY.MM.DD``,
``HH:MM:SS``) are not accepted: a value is checked before it is stored or
published, so what micropacs writes is always in the current form.
"""

from __future__ import annotations

import re

DATE = re.compile(r"[0-9]{8}")
"""A DA value, whole (PS3.5 6.2: YYYYMMDD)."""
TIME = re.compile(r"([01][0-9]|2[0-3])([0-5][0-9](([0-5][0-9]|60)(\.[0-9]{1,6})?)?)?")
"""A TM value, whole (PS3.5 6.2: HH[MM[SS[.FFFFFF]]]; a fraction only after the seconds)."""


def is_date(value: str) -> bool:
    """Whether ``value`` is a DA value (PS3.5 6.2), its padding removed."""
    return DATE.fullmatch(value.strip()) is not None


def is_time(value: str) -> bool:
    """Whether ``value`` is a TM value (PS3.5 6.2), its padding removed."""
    return TIME.fullmatch(value.strip()) is not None
