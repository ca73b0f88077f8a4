"""Reading the pages' forms: ``application/x-www-form-urlencoded`` bodies, bounded.

The pages post plain forms (no file uploads), so the body is parsed here with the
standard library rather than a multipart parser.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qsl

from starlette.requests import Request

from micropacs.errors import InvalidInput, RequestTooLarge

MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 64
FORM = "application/x-www-form-urlencoded"


class UnsupportedForm(InvalidInput):
    """A page's form posted as something other than a URL-encoded form (HTTP 415)."""

    http = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


async def form_of(request: Request) -> dict[str, str]:
    """The posted form's fields (the first value of each), as text."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM:
        raise UnsupportedForm(f"post this form as {FORM}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RequestTooLarge(f"a form is at most {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the form is not readable: {exc}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value.strip())
    return fields
