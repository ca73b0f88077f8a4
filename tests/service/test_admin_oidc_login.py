"""Single sign-on to the admin UI against a real OpenID Connect provider the test starts.

The admin service is built with ``MICROPACS_AUTH__BACKEND=oidc`` and a client id; its
own Authlib client talks HTTP to :mod:`tests.oidc_provider`, which checks the client
secret, the redirect URI and the PKCE verifier and signs the tokens. The test plays
the browser: it follows the redirects between the admin service (in process, behind
the real gate) and the provider (over loopback HTTP), keeping each side's cookies.
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.browser import FLOW_COOKIE
from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.session import COOKIE, shared_sessions
from micropacs.config import AuthSettings
from micropacs.http import build_http_app
from micropacs.ports import AuditQuery, AuditRecord
from tests.oidc_provider import OidcProvider, challenge_of, oidc_provider
from tests.service.conftest import Running, service_settings, wait_until

CLIENT = "micropacs-admin"
SECRET = "the-admin-client-secret-0f9a"
SITE = "http://pacs"
CALLBACK = f"{SITE}/login/oidc/callback"
VIEWER = {"realm_access": {"roles": ["offline_access", "micropacs-viewer"]}}
ADMINISTRATOR = {"realm_access": {"roles": ["micropacs-operator", "micropacs-administrator"]}}


@dataclass
class Sso:
    """The admin service over a running micropacs, configured for single sign-on."""

    pacs: Running
    app: Starlette
    provider: OidcProvider

    def run(self, walk: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.pacs.loop_call(walk())

    def browser(self) -> httpx.AsyncClient:
        """A browser of the admin site: its own cookies, no redirects followed."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=SITE)

    def audit(self, kind: str) -> list[AuditRecord]:
        return self.pacs.loop_call(self.pacs.catalog.audit(AuditQuery(kind=kind)))


@pytest.fixture
def sso(tmp_path: Path) -> Iterator[Sso]:
    with oidc_provider(CLIENT, SECRET, [CALLBACK]) as provider:
        settings = service_settings(tmp_path / "data")
        settings.auth = AuthSettings(
            backend="oidc",
            oidc_issuer=provider.url,
            oidc_audience="micropacs",
            oidc_client_id=CLIENT,
            oidc_client_secret=SecretStr(SECRET),
            oidc_roles_claim="realm_access.roles",
            oidc_role_prefix="micropacs-",
            oidc_leeway=5,
            session_key=SecretStr(secrets.token_urlsafe(32)),
        )
        provider.claims = dict(VIEWER)
        pacs = Running(settings)
        try:
            gate = Middleware(
                Gate,
                authenticate=authenticator(settings, pacs.catalog),
                metrics_open=False,
                basic=False,
            )
            routes = [route for app in pacs.apps for route in app.web_routes()]
            yield Sso(pacs, build_http_app(pacs.registry, {}, routes, access=gate), provider)
        finally:
            pacs.close()


async def start(browser: httpx.AsyncClient, next_path: str = "/studies") -> str:
    """Ask the admin site for single sign-on; the provider's authorization URL."""
    answer = await browser.get(f"/login/oidc?next={urllib.parse.quote(next_path)}")
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


async def authorize(url: str) -> str:
    """The provider's answer to the authorization request: the admin site's callback path."""
    async with httpx.AsyncClient(timeout=10) as idp:
        answer = await idp.get(url)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?"), location
    return location.removeprefix(SITE)


async def log_in(browser: httpx.AsyncClient, next_path: str = "/studies") -> httpx.Response:
    """The whole round trip; the admin site's answer to the callback."""
    return await browser.get(await authorize(await start(browser, next_path)))


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def test_the_login_redirect_carries_state_nonce_and_an_s256_challenge(sso: Sso) -> None:
    async def walk() -> None:
        async with sso.browser() as browser, sso.browser() as other:
            url = await start(browser)
            assert url.startswith(f"{sso.provider.url}/authorize?")
            asked = query_of(url)
            assert asked["response_type"] == "code"
            assert (asked["client_id"], asked["redirect_uri"]) == (CLIENT, CALLBACK)
            assert "openid" in asked["scope"].split()
            assert asked["code_challenge_method"] == "S256"
            assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32
            # The verifier stays in the browser's signed, HttpOnly flow cookie.
            sealed = browser.cookies[FLOW_COOKIE]
            kept = shared_sessions(sso.pacs.settings.auth).unseal(sealed, "oidc", 600)
            assert kept is not None and kept["s"] == asked["state"]
            assert asked["code_challenge"] == challenge_of(kept["v"])
            assert kept["v"] not in url
            # Every login has its own.
            again = query_of(await start(other))
            for name in ("state", "nonce", "code_challenge"):
                assert again[name] != asked[name], name

            done = await browser.get(await authorize(url))
            assert done.status_code == 303 and done.headers["location"] == "/studies"
            assert FLOW_COOKIE not in browser.cookies  # cleared once used
            page = await browser.get("/studies")
            assert page.status_code == 200 and "dr.novak (viewer)" in page.text

    sso.run(walk)
    assert sso.provider.refusals == []
    [login] = wait_until(lambda: sso.audit("login"), what="the login's audit record")
    assert (login.actor, login.role, login.detail) == ("dr.novak", "viewer", "oidc")


def test_a_callback_with_another_state_is_refused(sso: Sso) -> None:
    async def walk() -> None:
        async with sso.browser() as browser:
            callback = await authorize(await start(browser))
            asked = query_of(callback)
            forged = callback.replace(asked["state"], secrets.token_urlsafe(24))
            refused = await browser.get(forged, headers={"Accept": "text/html"})
            assert refused.status_code == 401
            assert "state does not match" in refused.text
            assert "Log in with single sign-on" in refused.text  # what to do next
            assert COOKIE not in browser.cookies
            assert (await browser.get("/api/studies")).status_code == 401

    sso.run(walk)
    # The code was never taken to the token endpoint.
    assert sso.provider.refusals == []
    [failed] = wait_until(lambda: sso.audit("login-failed"), what="the failure's audit record")
    assert failed.outcome == 4 and "state" in failed.detail


def test_a_code_redeemed_with_another_logins_verifier_is_refused_by_the_provider(
    sso: Sso,
) -> None:
    async def walk() -> None:
        async with sso.browser() as victim, sso.browser() as attacker:
            # The victim's login is under way; the attacker slips it a code issued to
            # its own login (another code challenge) with the victim's state.
            victim_url = await start(victim)
            stolen = query_of(await authorize(await start(attacker)))
            injected = "/login/oidc/callback?" + urllib.parse.urlencode(
                {"code": stolen["code"], "state": query_of(victim_url)["state"]}
            )
            refused = await victim.get(injected, headers={"Accept": "text/html"})
            assert refused.status_code == 401
            assert "the provider refused the login (invalid_grant): log in again" in refused.text
            assert "Log in with single sign-on" in refused.text
            assert COOKIE not in victim.cookies

    sso.run(walk)
    assert sso.provider.refusals == ["token: invalid_grant (PKCE verifier)"]


def test_roles_come_from_the_claim_and_a_viewer_may_not_delete(sso: Sso) -> None:
    study = "1.2.826.0.1.3680043.8.498.1"

    async def walk() -> None:
        async with sso.browser() as viewer, sso.browser() as nobody, sso.browser() as admin:
            assert (await log_in(viewer)).status_code == 303
            token = csrf_of((await viewer.get("/studies")).text)
            assert (await viewer.get("/api/studies")).status_code == 200
            deleted = await viewer.delete(f"/api/studies/{study}", headers={"X-CSRF-Token": token})
            assert deleted.status_code == 403 and "viewer" in deleted.text
            assert (await viewer.get("/users")).status_code == 403

            sso.provider.claims = {"realm_access": {"roles": ["offline_access"]}}
            none = await log_in(nobody)
            assert none.status_code == 403 and "no micropacs role" in none.text
            assert COOKIE not in nobody.cookies

            sso.provider.claims = dict(ADMINISTRATOR)
            assert (await log_in(admin)).status_code == 303
            users = await admin.get("/users")
            assert users.status_code == 200 and "dr.novak (administrator)" in users.text

    sso.run(walk)


def test_logout_ends_the_session(sso: Sso) -> None:
    async def walk() -> None:
        async with sso.browser() as browser:
            assert (await log_in(browser)).status_code == 303
            cookie = browser.cookies[COOKIE]
            token = csrf_of((await browser.get("/studies")).text)
            assert (await browser.post("/logout", data={})).status_code == 403  # no token
            out = await browser.post("/logout", data={"csrf_token": token})
            assert out.status_code == 303 and out.headers["location"] == "/login"
            cleared = [h for h in out.headers.get_list("set-cookie") if h.startswith(COOKIE)]
            assert cleared and "Max-Age=0" in cleared[0]
            assert COOKIE not in browser.cookies
            # The old cookie, kept by someone, is refused too.
            browser.cookies.set(COOKIE, cookie)
            assert browser.cookies[COOKIE] == cookie
            assert (await browser.get("/api/studies")).status_code == 401
            page = await browser.get("/studies", headers={"Accept": "text/html"})
            assert page.status_code == 303 and page.headers["location"].startswith("/login")

    sso.run(walk)
    [logout] = wait_until(lambda: sso.audit("logout"), what="the logout's audit record")
    assert logout.actor == "dr.novak"


def test_an_expired_id_token_is_refused(sso: Sso) -> None:
    sso.provider.id_token_lifetime = -60  # beyond the five seconds of leeway

    async def walk() -> None:
        async with sso.browser() as browser:
            refused = await log_in(browser)
            assert refused.status_code == 401
            assert "ID token is not valid" in refused.text
            assert COOKIE not in browser.cookies
            assert (await browser.get("/api/studies")).status_code == 401

    sso.run(walk)
    assert sso.provider.refusals == []  # the provider issued it; the admin refused it
