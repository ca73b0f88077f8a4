"""Session cookies and CSRF tokens: signatures, idle and absolute expiry, revocation,
cookie flags, and where a request's CSRF token is read from.

Time is the sessions' ``clock`` parameter, moved by the test: no sleeps.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from starlette.types import Message, Scope

from micropacs.auth import csrf
from micropacs.auth.principal import Principal, Role
from micropacs.auth.session import (
    REFRESH,
    SessionCookies,
    cookie_header,
    session_key,
)
from micropacs.config import AuthSettings

KEY = b"k" * 32
START = 1_800_000_000.0
ALICE = Principal(name="alice", role=Role.OPERATOR, via="password")


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def cookies(
    clock: Clock, key: bytes = KEY, idle: float = 1800, lifetime: float = 28800
) -> SessionCookies:
    settings = AuthSettings(session_idle_timeout=idle, session_lifetime=lifetime)
    return SessionCookies(key, settings, clock)


def test_a_session_reads_back_as_opened() -> None:
    clock = Clock()
    value, opened = cookies(clock).open(ALICE, "password")
    read = cookies(clock).read(value)  # another process with the same key
    assert read is not None
    assert (read.name, read.role, read.method, read.sid) == (
        "alice",
        Role.OPERATOR,
        "password",
        opened.sid,
    )
    assert read.csrf_token == opened.csrf_token and len(read.csrf_token) >= 43
    assert read.principal == Principal(name="alice", role=Role.OPERATOR, via="session")


def tampered(value: str, clock: Clock) -> list[str]:
    """The cookie with its payload (an administrator's, made elsewhere), its timestamp or
    its signature changed, or cut short."""
    payload, stamp, signature = value.rsplit(".", 2)
    boss = Principal(name="alice", role=Role.ADMINISTRATOR, via="password")
    forged, _, _ = cookies(clock, key=b"o" * 32).open(boss, "password")[0].rsplit(".", 2)
    return [
        f"{forged}.{stamp}.{signature}",
        f"{payload}.{stamp[:-1]}{'A' if stamp[-1] != 'A' else 'B'}.{signature}",
        f"{payload}.{stamp}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",
        f"{payload}.{stamp}",
        "",
        "not-a-cookie",
    ]


def test_a_tampered_or_foreign_cookie_is_refused() -> None:
    clock = Clock()
    sessions = cookies(clock)
    value, _ = sessions.open(ALICE, "password")
    for changed in tampered(value, clock):
        assert sessions.read(changed) is None, changed
    assert cookies(clock, key=b"o" * 32).read(value) is None  # another site's key
    # A value the same key signed for another purpose is no session.
    sealed = sessions.seal({"n": "alice", "r": "administrator"}, "oidc")
    assert sessions.read(sealed) is None
    assert sessions.unseal(value, "oidc", 600) is None


def test_a_session_ends_after_the_idle_timeout() -> None:
    clock = Clock()
    sessions = cookies(clock, idle=600)
    value, _ = sessions.open(ALICE, "password")
    clock.now += 599
    assert sessions.read(value) is not None
    clock.now += 2
    assert sessions.read(value) is None


def test_activity_slides_the_idle_timeout_but_not_the_lifetime() -> None:
    clock = Clock()
    sessions = cookies(clock, idle=600, lifetime=3600)
    value, _ = sessions.open(ALICE, "password")
    session = sessions.read(value)
    assert session is not None
    assert sessions.refreshed(session) is None  # just signed: nothing to do
    while clock.now - START < 3500:
        clock.now += REFRESH + 1
        session = sessions.read(value)
        assert session is not None, clock.now - START
        refreshed = sessions.refreshed(session)
        assert refreshed is not None and refreshed != value
        value = refreshed
    assert sessions.read(value) is not None
    clock.now = START + 3601  # signed a minute ago, opened an hour ago
    assert sessions.read(value) is None


def test_a_revoked_session_is_refused_until_it_would_have_ended() -> None:
    clock = Clock()
    sessions = cookies(clock)
    value, session = sessions.open(ALICE, "password")
    other, _ = sessions.open(ALICE, "password")
    sessions.revoke(session)
    assert sessions.read(value) is None
    assert sessions.read(other) is not None  # the same user's other session stays


@pytest.mark.parametrize(
    ("configured", "scheme", "secure"),
    [(None, "http", False), (None, "https", True), (True, "http", True), (False, "https", False)],
)
def test_cookies_are_secure_on_https_or_as_configured(
    configured: bool | None, scheme: str, secure: bool
) -> None:
    settings = AuthSettings(session_cookie_secure=configured)
    assert SessionCookies(KEY, settings, Clock()).secure(scheme) is secure


def test_cookie_flags() -> None:
    header = cookie_header("micropacs_session", "v", secure=True, max_age=None).decode()
    assert header.split("; ") == [
        "micropacs_session=v",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ]
    deleting = cookie_header("x", "", secure=False, max_age=0, path="/login").decode()
    assert deleting.split("; ") == ["x=", "Path=/login", "HttpOnly", "SameSite=Lax", "Max-Age=0"]


def test_a_configured_session_key_must_be_long() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        session_key(AuthSettings(session_key=SecretStr("short")))
    assert session_key(AuthSettings(session_key=SecretStr("s" * 32))) == b"s" * 32


# -- CSRF -----------------------------------------------------------------------------


def scope(headers: dict[str, str]) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def body_of(*chunks: bytes) -> list[Message]:
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


async def presented(headers: dict[str, str], *chunks: bytes) -> tuple[str, bytes]:
    """The token of a request and the body the application reads after the check."""
    messages = body_of(*chunks)

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    token, after = await csrf.presented(scope(headers), receive)
    read = await csrf.read_body(after, 1 << 20)
    return token, read


def test_the_token_is_read_from_the_header_or_the_form_and_the_body_kept() -> None:
    form = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    assert asyncio.run(presented({"x-csrf-token": "t1"}, b"a=1")) == ("t1", b"a=1")
    assert asyncio.run(presented(form, b"a=1&csrf_", b"token=t2&b=2")) == (
        "t2",
        b"a=1&csrf_token=t2&b=2",
    )
    # JSON bodies are not searched: the header is the only place.
    json = {"content-type": "application/json"}
    assert asyncio.run(presented(json, b'{"csrf_token": "t3"}')) == ("", b'{"csrf_token": "t3"}')


def test_a_form_too_large_for_the_check_is_refused() -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    with pytest.raises(csrf.FormTooLarge):
        asyncio.run(presented(form, b"a=" + b"x" * csrf.MAX_FORM, b"&csrf_token=t"))


def test_refusals_say_why() -> None:
    token = csrf.new_token()
    assert csrf.refusal(token, token) == ""
    assert "missing" in csrf.refusal(token, "")
    assert "not this session's" in csrf.refusal(token, csrf.new_token())
    assert "not this session's" in csrf.refusal(token, token[:-1])
