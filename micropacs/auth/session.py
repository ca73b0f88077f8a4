"""Browser sessions: a signed cookie that carries the principal (OWASP Session Management).

The cookie holds the principal's name and role, how it logged in, when, a session
id and the session's CSRF token (:mod:`micropacs.auth.csrf`), signed with HMAC by
itsdangerous; the signature's timestamp is the last time the server re-signed it.
The server enforces both ends itself, whatever the browser keeps: a cookie not
re-signed for ``session_idle_timeout`` seconds, or issued more than
``session_lifetime`` seconds ago, is refused. A request re-signs its cookie once
:data:`REFRESH` seconds have passed, so activity keeps a session alive.

The cookie is ``HttpOnly``, ``SameSite=Lax`` and ``Secure`` when the request came
over TLS (or as configured). Logging out revokes the session id in this process
until the session could have ended anyway; other processes keep honouring the
cookie until its idle timeout.

The signing key comes from ``MICROPACS_AUTH__SESSION_KEY`` or the file named by
``MICROPACS_AUTH__SESSION_KEY_FILE``; without either a random key is made once per
process (with a warning): sessions then end when the process restarts, and several
admin processes do not share them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from micropacs.auth.csrf import new_token
from micropacs.auth.principal import Principal, Role
from micropacs.config import AuthSettings

log = logging.getLogger(__name__)

COOKIE: Final = "micropacs_session"
REFRESH: Final = 60.0
"""Seconds after which a used session's cookie is signed anew (sliding idle timeout)."""
MIN_KEY: Final = 32
SESSION: Final = "session"
"""The ``via`` of a principal that came with a session cookie."""

_generated: bytes | None = None
_generated_lock = threading.Lock()


def session_key(settings: AuthSettings) -> bytes:
    """The key signing session cookies: the file's, the variable's or this process's own.

    Raises :class:`ValueError` for a configured key shorter than :data:`MIN_KEY`.
    """
    global _generated
    if settings.session_key_file is not None:
        key = settings.session_key_file.read_text().strip()
    else:
        key = settings.session_key.get_secret_value()
    if key:
        if len(key) < MIN_KEY:
            raise ValueError(f"the session key needs at least {MIN_KEY} characters")
        return key.encode()
    with _generated_lock:
        if _generated is None:
            log.warning(
                "no MICROPACS_AUTH__SESSION_KEY: browser sessions are signed with a key made"
                " for this process and end when it restarts"
            )
            _generated = secrets.token_bytes(32)
        return _generated


@dataclass(frozen=True)
class Session:
    """A logged-in browser: who, how, since when, and the token its unsafe requests send."""

    name: str
    role: Role
    method: str
    """How the session was opened: ``password`` or ``oidc``."""
    issued: float
    """When it was opened (seconds since the epoch)."""
    signed: float
    """When its cookie was last signed (seconds since the epoch)."""
    sid: str
    csrf_token: str

    @property
    def principal(self) -> Principal:
        """The principal of the session's requests (``via`` is ``session``)."""
        return Principal(name=self.name, role=self.role, via=SESSION)


Clock = Callable[[], float]


def _signer(clock: Clock) -> type[TimestampSigner]:
    """itsdangerous' timestamp signer reading ``clock`` when it signs and when it checks."""

    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return ClockSigner


class SessionCookies:
    """Issues, checks, refreshes and revokes session cookies, and seals short-lived values.

    ``clock`` gives the time (seconds since the epoch) for signing and every expiry.
    """

    def __init__(self, key: bytes, settings: AuthSettings, clock: Clock = time.time) -> None:
        self._key = key
        self._clock = clock
        self._signer = _signer(clock)
        self._sessions = self._serializer("session")
        self.idle_timeout = settings.session_idle_timeout
        self.lifetime = settings.session_lifetime
        self._secure = settings.session_cookie_secure
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal, method: str) -> tuple[str, Session]:
        """A new session of ``principal``: the cookie value and the session."""
        now = self._clock()
        session = Session(
            name=principal.name,
            role=principal.role,
            method=method,
            issued=now,
            signed=now,
            sid=secrets.token_urlsafe(16),
            csrf_token=new_token(),
        )
        return self._sign(session), session

    def read(self, value: str) -> Session | None:
        """The session of a cookie value, or None: bad signature, idle, too old or revoked."""
        try:
            payload, signed = self._sessions.loads(
                value, max_age=int(self.idle_timeout), return_timestamp=True
            )
            session = Session(
                name=str(payload["n"]),
                role=Role(payload["r"]),
                method=str(payload["m"]),
                issued=float(payload["i"]),
                signed=signed.timestamp(),
                sid=str(payload["s"]),
                csrf_token=str(payload["c"]),
            )
        except SignatureExpired:
            log.info("session cookie refused", extra={"reason": "idle"})
            return None
        except (BadSignature, KeyError, TypeError, ValueError):
            log.info("session cookie refused", extra={"reason": "not valid"})
            return None
        if self._clock() - session.issued > self.lifetime:
            log.info("session cookie refused", extra={"reason": "lifetime"})
            return None
        with self._lock:
            if session.sid in self._revoked:
                return None
        return session

    def refreshed(self, session: Session) -> str | None:
        """A newly signed cookie value once :data:`REFRESH` seconds passed, else None."""
        if self._clock() - session.signed < min(REFRESH, self.idle_timeout / 10):
            return None
        return self._sign(session)

    def revoke(self, session: Session) -> None:
        """Refuse ``session`` from now on (in this process) until it would have ended."""
        now = self._clock()
        with self._lock:
            for sid in [s for s, until in self._revoked.items() if until <= now]:
                del self._revoked[sid]
            self._revoked[session.sid] = session.issued + self.lifetime

    def secure(self, scheme: str) -> bool:
        """Whether cookies are marked ``Secure`` for a request of ``scheme``."""
        return scheme in {"https", "wss"} if self._secure is None else self._secure

    def seal(self, values: dict[str, Any], purpose: str) -> str:
        """``values`` signed for ``purpose`` (the OIDC state, the login form's token)."""
        return str(self._serializer(purpose).dumps(values))

    def unseal(self, value: str, purpose: str, max_age: float) -> dict[str, Any] | None:
        """What :meth:`seal` signed for ``purpose`` at most ``max_age`` seconds ago, or None."""
        try:
            values = self._serializer(purpose).loads(value, max_age=int(max_age))
        except BadSignature:
            return None
        return values if isinstance(values, dict) else None

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._key, salt=f"micropacs.{purpose}", signer=self._signer)

    def _sign(self, session: Session) -> str:
        payload = {
            "n": session.name,
            "r": session.role.value,
            "m": session.method,
            "i": session.issued,
            "s": session.sid,
            "c": session.csrf_token,
        }
        return str(self._sessions.dumps(payload))


def cookie_header(
    name: str, value: str, *, secure: bool, max_age: float | None, path: str = "/"
) -> bytes:
    """A ``Set-Cookie`` value (RFC 6265 4.1): HttpOnly, SameSite=Lax; ``max_age`` 0 deletes."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def cookie_value(scope_headers: list[tuple[bytes, bytes]], name: str) -> str:
    """The value of cookie ``name`` in a request's ``Cookie`` headers ("" when absent)."""
    for key, raw in scope_headers:
        if key != b"cookie":
            continue
        for pair in bytes(raw).decode("latin-1").split(";"):
            cookie, _, value = pair.strip().partition("=")
            if cookie == name:
                return value
    return ""


_shared: dict[tuple[bytes, float, float, bool | None], SessionCookies] = {}


def shared_sessions(settings: AuthSettings) -> SessionCookies:
    """The process's session cookies for ``settings``, so the gate and the login routes
    share one key and one revocation list."""
    key = session_key(settings)
    ident = (
        key,
        settings.session_idle_timeout,
        settings.session_lifetime,
        settings.session_cookie_secure,
    )
    with _generated_lock:
        if ident not in _shared:
            _shared[ident] = SessionCookies(key, settings)
        return _shared[ident]
