"""Choosing the Specific Character Set (0008,0005) of a response (PS3.5 6.1, PS3.4 C.4.1.1.3.1).

The catalog holds text as Unicode. A response is encoded in the character
set the requester used when that can represent every value, otherwise in
ISO_IR 192 (UTF-8), which can represent anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.charset import python_encoding

UTF8 = "ISO_IR 192"


def _texts(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _texts(value)
    elif isinstance(data, list):
        for value in data:
            yield from _texts(value)


def response_charset(response: dict[str, Any], requested: Any) -> str | None:
    """The Specific Character Set to encode ``response`` (DICOM JSON) in, or None for ASCII."""
    terms = [requested] if isinstance(requested, str) else list(requested or [])
    terms = [str(t).strip() for t in terms]
    texts = [t for t in _texts(response) if not t.isascii()]
    if not texts:
        return terms[0] if len(terms) == 1 and terms[0] else None
    if len(terms) == 1 and terms[0] in python_encoding:
        codec = python_encoding[terms[0]]
        try:
            for text in texts:
                text.encode(codec)
        except (UnicodeEncodeError, LookupError):
            return UTF8
        return terms[0]
    return UTF8
