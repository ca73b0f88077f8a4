"""URLs made fit to quote in an error message or a log line.

A store URL may carry a password (``mongodb://user:password@host/…``,
``mongodb+srv://…``, ``kafka://user:password@…``) or a secret in its query
(``?password=…``, ``authMechanismProperties=AWS_SESSION_TOKEN:…``). An error that
quotes the URL as given would put that secret on the operator's screen and in
the logs, so every message that names a URL names :func:`safe_url` of it.
"""

from __future__ import annotations

import re

HIDDEN = "***"
# Query parameters whose values are secrets, whatever the scheme.
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|authmechanismproperties", re.I)


def safe_url(url: str) -> str:
    """``url`` without its user information and with secret-looking query values hidden.

    Never raises, whatever the text: a URL too malformed to parse is the one an
    error is most likely to quote. Everything up to the last ``@`` is taken as
    user information, so an unescaped ``@``, ``/`` or ``?`` in a password is
    hidden with the rest of it (a path with an ``@`` loses its start: the safe
    side).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # ``user:password@host`` without a scheme is the same mistake
        scheme, rest = "", url
    if "@" in rest and not rest.startswith("/"):
        # Up to the last ``@``, wherever it is: a password may hold an unescaped
        # ``/``, ``?`` or ``#`` that would otherwise end the authority early.
        rest = f"{HIDDEN}@{rest.rpartition('@')[2]}"
    return f"{scheme}{sep}{_hide_query(rest)}"


def _hide_query(text: str) -> str:
    base, sep, query = text.partition("?")
    if not sep:
        return text
    query, hash_sep, fragment = query.partition("#")
    parts = []
    for pair in query.split("&"):
        key, eq, _value = pair.partition("=")
        parts.append(f"{key}={HIDDEN}" if eq and _SECRET_KEY.search(key) else pair)
    return f"{base}?{'&'.join(parts)}{hash_sep}{fragment}"
