"""Cross-site request forgery: the token every unsafe request of a browser session sends.

A synchronizer token (OWASP CSRF Prevention Cheat Sheet): each session has a random
token of its own, kept inside the signed session cookie (:mod:`micropacs.auth.session`)
and given to the pages, which send it back on every POST, PUT, PATCH and DELETE,
in the ``X-CSRF-Token`` header (htmx, through ``hx-headers``) or as the
``csrf_token`` field of a form (``application/x-www-form-urlencoded``, read up to
:data:`MAX_FORM` bytes and handed on unchanged). Another site can make the browser
send the cookie, never read the token. Requests with a bearer token carry no
cookie-borne authority and need none.
"""

from __future__ import annotations

import hmac
import secrets
import urllib.parse
from typing import Final

from starlette.types import Message, Receive, Scope

HEADER: Final = b"x-csrf-token"
FIELD: Final = "csrf_token"
UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM: Final = 1 << 20
FORM: Final = "application/x-www-form-urlencoded"


class FormTooLarge(ValueError):
    """A form body longer than the limit given to :func:`read_form`."""


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return secrets.token_urlsafe(32)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def is_form(scope: Scope) -> bool:
    """Whether the request's body is an URL-encoded form."""
    media = _header(scope, b"content-type").partition(";")[0].strip().lower()
    return media == FORM


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`FormTooLarge` past ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body.extend(message.get("body", b""))
        if len(body) > limit:
            raise FormTooLarge(f"the form is larger than {limit} bytes")
        if not message.get("more_body", False):
            break
    return bytes(body)


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of an URL-encoded form body (the first value of each name)."""
    fields: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), True):
        fields.setdefault(name, value)
    return fields


def replay(body: bytes) -> Receive:
    """A ``receive`` that gives ``body`` again, as one message."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def presented(scope: Scope, receive: Receive) -> tuple[str, Receive]:
    """The token a request presents, and the ``receive`` the application reads next.

    The header wins; else a form's ``csrf_token`` field, the body read and replayed.
    Raises :class:`FormTooLarge` for a form of more than :data:`MAX_FORM` bytes.
    """
    token = _header(scope, HEADER)
    if token or not is_form(scope):
        return token, receive
    body = await read_body(receive, MAX_FORM)
    return parse_form(body).get(FIELD, ""), replay(body)


def refusal(expected: str, token: str) -> str:
    """Why ``token`` is refused for a session whose token is ``expected`` ("" when it is not)."""
    if not token:
        return "the CSRF token is missing: send it in X-CSRF-Token or the csrf_token field"
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return "the CSRF token is not this session's: reload the page"
    return ""
