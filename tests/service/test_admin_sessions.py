"""Browser sessions of the admin service through the real gate, with local users.

The admin service is built with ``MICROPACS_AUTH__BACKEND=local``; a browser logs in
at ``/login`` and its session cookie is checked on every request: a tampered cookie
is no credentials, its flags follow the site's scheme, every unsafe request it makes
needs the session's CSRF token (a bearer token needs none), and its idle and absolute
expiry are the server's (time moved through the sessions' clock, no sleeps). Logins
and failed logins, throttled ones too, land in the audit trail.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.browser import LOGIN_COOKIE
from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.principal import Principal, Role
from micropacs.auth.session import COOKIE, REFRESH, SessionCookies, session_key
from micropacs.auth.throttle import FREE_FAILURES
from micropacs.config import AuthSettings
from micropacs.http import build_http_app
from micropacs.ports import AuditQuery, AuditRecord
from tests.service.conftest import Running, service_settings, wait_until

PASSWORD = "a long pass phrase 42"
START = 1_900_000_000.0


@dataclass
class Site:
    """The admin service over a running micropacs with local users and a token."""

    pacs: Running
    app: Starlette
    token: str
    """An administrator's API token."""

    def run(self, walk: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.pacs.loop_call(walk())

    def browser(
        self, base_url: str = "http://pacs", app: Starlette | None = None
    ) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app or self.app)
        return httpx.AsyncClient(transport=transport, base_url=base_url)

    def audit(self, kind: str, actor: str) -> list[AuditRecord]:
        query = AuditQuery(kind=kind, actor=actor)
        return self.pacs.loop_call(self.pacs.catalog.audit(query))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = service_settings(tmp_path / "data")
    settings.auth = AuthSettings(backend="local", session_key=SecretStr(secrets.token_urlsafe(32)))
    pacs = Running(settings)
    try:
        credentials = pacs.admin.context.credentials

        async def prepare() -> str:
            for role in Role:
                await credentials.set_user(f"{role}-1", PASSWORD, role)
            # Throttled by one test: the process's verifier remembers its failures.
            await credentials.set_user("forgetful-1", PASSWORD, Role.OPERATOR)
            token, _ = await credentials.create_token(Role.ADMINISTRATOR, "sessions test")
            return token

        yield Site(pacs, gated_app(pacs), pacs.loop_call(prepare()))
    finally:
        pacs.close()


def gated_app(pacs: Running, sessions: SessionCookies | None = None) -> Starlette:
    """The services' routes behind the gate as the runtime builds it (reading the cookies of
    ``sessions``, by default the process's shared ones, which the login routes issue)."""
    gate = Middleware(
        Gate,
        authenticate=authenticator(pacs.settings, pacs.catalog, sessions),
        metrics_open=False,
        basic=False,
    )
    routes = [route for app in pacs.apps for route in app.web_routes()]
    # A second app over the same services gets a registry of its own for its readiness.
    registry = pacs.registry if sessions is None else CollectorRegistry()
    return build_http_app(registry, {}, routes, access=gate)


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, name
    return found.group(1)


async def log_in(browser: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    form = await browser.get("/login")
    assert form.status_code == 200
    data = {"username": name, "password": password, "csrf_token": field(form.text, "csrf_token")}
    return await browser.post("/login", data={**data, "next": "/studies"})


async def send(
    browser: httpx.AsyncClient,
    method: str,
    path: str,
    cookie: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request carrying exactly this session cookie (none of the browser's own)."""
    browser.cookies.clear()
    return await browser.request(
        method, path, headers={"Cookie": f"{COOKIE}={cookie}", **(headers or {})}
    )


def resigned(answer: httpx.Response) -> str:
    """The session cookie an answer set ("" when it set none)."""
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            return rest.partition(";")[0]
    return ""


async def csrf_token(browser: httpx.AsyncClient) -> str:
    page = await browser.get("/studies")
    assert page.status_code == 200, page.text
    return field(page.text, "csrf_token")


def test_a_tampered_session_cookie_is_no_credentials(site: Site) -> None:
    async def walk() -> None:
        async with site.browser() as browser:
            assert (await log_in(browser, "viewer-1")).status_code == 303
            value = browser.cookies[COOKIE]
            assert (await browser.get("/api/studies")).status_code == 200
            payload, stamp, signature = value.rsplit(".", 2)
            flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
            for forged in (f"{payload}.{stamp}.{flipped}", f"{payload}.{stamp}", "x"):
                api = await send(browser, "GET", "/api/studies", forged)
                assert api.status_code == 401, forged
                assert api.headers["www-authenticate"].startswith("Bearer")
                page = await send(browser, "GET", "/studies", forged, {"Accept": "text/html"})
                assert page.status_code == 303 and page.headers["location"].startswith("/login")
            assert (await send(browser, "GET", "/api/studies", value)).status_code == 200

    site.run(walk)


@pytest.mark.parametrize(("base_url", "secure"), [("http://pacs", False), ("https://pacs", True)])
def test_session_cookies_are_httponly_lax_and_secure_on_https(
    site: Site, base_url: str, secure: bool
) -> None:
    async def walk() -> None:
        async with site.browser(base_url) as browser:
            form = await browser.get("/login")
            [login_cookie] = form.headers.get_list("set-cookie")
            assert login_cookie.startswith(f"{LOGIN_COOKIE}=")
            logged_in = await log_in(browser, "operator-1")
            assert logged_in.status_code == 303
            [session] = [
                h for h in logged_in.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}=")
            ]
            for header in (login_cookie, session):
                flags = header.split("; ")[1:]
                assert "HttpOnly" in flags and "SameSite=Lax" in flags, header
                assert ("Secure" in flags) is secure, header
            assert "Path=/" in session.split("; ") and "Max-Age" not in session

    site.run(walk)


def test_unsafe_requests_of_a_session_need_its_csrf_token(site: Site) -> None:
    user = {"name": "nurse-1", "password": PASSWORD, "role": "viewer"}

    async def walk() -> None:
        async with site.browser() as browser, site.browser() as other:
            assert (await log_in(browser, "administrator-1")).status_code == 303
            assert (await log_in(other, "administrator-1")).status_code == 303
            token = await csrf_token(browser)
            foreign = await csrf_token(other)  # the same user's other session
            assert foreign != token
            requests = [
                ("POST", "/api/users", user, 201),
                ("PUT", "/api/users/nurse-1/role", {"role": "operator"}, 200),
                ("DELETE", "/api/users/nurse-1", None, 204),
            ]
            for method, path, body, done in requests:
                for sent in ({}, {"X-CSRF-Token": foreign}, {"X-CSRF-Token": ""}):
                    refused = await browser.request(method, path, json=body, headers=sent)
                    assert refused.status_code == 403, (method, sent)
                    assert "CSRF token" in refused.json()["error"]
                answer = await browser.request(
                    method, path, json=body, headers={"X-CSRF-Token": token}
                )
                assert answer.status_code == done, (method, answer.text)
            # A form posts its token as a field.
            form = await browser.post("/logout", data={"csrf_token": "wrong"})
            assert form.status_code == 403

    site.run(walk)


def test_a_bearer_token_needs_no_csrf_token(site: Site) -> None:
    bearer = {"Authorization": f"Bearer {site.token}"}
    user = {"name": "nurse-2", "password": PASSWORD, "role": "viewer"}

    async def walk() -> None:
        async with site.browser() as browser:
            assert (await browser.post("/api/users", json=user, headers=bearer)).status_code == 201
            assert (
                await browser.put(
                    "/api/users/nurse-2/role", json={"role": "operator"}, headers=bearer
                )
            ).status_code == 200
            # With a session cookie too, the bearer token is the credentials.
            assert (await log_in(browser, "viewer-1")).status_code == 303
            removed = await browser.delete("/api/users/nurse-2", headers=bearer)
            assert removed.status_code == 204
            assert (await browser.delete("/api/users/viewer-1")).status_code == 403

    site.run(walk)


def test_idle_and_absolute_expiry_are_the_servers(site: Site) -> None:
    now = [START]
    auth = site.pacs.settings.auth.model_copy(
        update={"session_idle_timeout": 600.0, "session_lifetime": 3600.0}
    )
    sessions = SessionCookies(session_key(auth), auth, lambda: now[0])
    app = gated_app(site.pacs, sessions)
    bob = Principal(name="operator-1", role=Role.OPERATOR, via="password")

    async def walk() -> None:
        async with site.browser(app=app) as browser:
            value, _ = sessions.open(bob, "password")
            now[0] += 599
            kept = await send(browser, "GET", "/api/studies", value)
            assert kept.status_code == 200 and resigned(kept)
            # A used session's cookie is signed anew, which keeps it alive past the
            # first idle timeout...
            while now[0] < START + 3600 - REFRESH:
                value = resigned(kept) or value
                now[0] += 590
                kept = await send(browser, "GET", "/api/studies", value)
                assert kept.status_code == 200, now[0] - START
            # ...but not past its lifetime, however busy.
            now[0] = START + 3601
            value = resigned(kept) or value
            assert (await send(browser, "GET", "/api/studies", value)).status_code == 401

            idle, _ = sessions.open(bob, "password")
            now[0] += 601
            assert (await send(browser, "GET", "/api/studies", idle)).status_code == 401
            page = await send(browser, "GET", "/studies", idle, {"Accept": "text/html"})
            assert page.status_code == 303 and page.headers["location"].startswith("/login")

    site.run(walk)


def test_logins_and_throttled_failures_are_in_the_audit_trail(site: Site) -> None:
    answers: list[int] = []

    async def walk() -> None:
        async with site.browser() as browser:
            for _ in range(FREE_FAILURES):
                wrong = await log_in(browser, "forgetful-1", "not the password")
                assert wrong.status_code == 401 and "not right" in wrong.text
                answers.append(wrong.status_code)
            # Now each failure makes the next try wait (1 s, then 2, 4...): a try that
            # comes later than that on a busy machine is checked, and fails, again.
            while answers[-1] != 429 and len(answers) < FREE_FAILURES + 6:
                again = await log_in(browser, "forgetful-1", "not the password")
                assert again.status_code in (401, 429), again.text
                answers.append(again.status_code)
            assert answers[-1] == 429
            throttled_text = again.text
            assert "try again shortly" in throttled_text and "not right" not in throttled_text
            assert int(again.headers["retry-after"]) >= 1
            assert COOKIE not in browser.cookies
            assert (await log_in(browser, "viewer-1")).status_code == 303

    site.run(walk)

    def every_failure() -> list[AuditRecord]:
        found = site.audit("login-failed", "forgetful-1")
        return found if len(found) >= len(answers) else []

    failed = wait_until(every_failure, what="every failed login's audit record")
    assert len(failed) == len(answers)
    assert all(record.outcome == 4 and record.source == "127.0.0.1" for record in failed)
    assert sorted(record.detail for record in failed) == sorted(
        "password: busy" if status == 429 else "password" for status in answers
    )
    assert all(
        PASSWORD not in record.detail and "not the password" not in record.detail
        for record in failed
    )
    [login] = wait_until(lambda: site.audit("login", "viewer-1"), what="the login's record")
    assert (login.role, login.detail, login.outcome) == ("viewer", "password", 0)
