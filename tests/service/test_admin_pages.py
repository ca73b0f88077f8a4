"""The admin web UI's pages, rendered in process behind the real gate with real tokens.

Every page renders for each role, shows only the buttons the role may use and refuses
the rest on the server, escapes hostile text stored in the archive, keeps non-ASCII
names intact, and without credentials answers 401 (a browser is sent to /login).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pydicom import dcmread
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.browser import LoginEvent, login_routes
from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.principal import Role
from micropacs.auth.session import shared_sessions
from micropacs.http import build_http_app
from micropacs.ports import ForwardState
from services.admin.web import templating
from services.admin.web.routes import login_renderer, page_routes
from tests import dicomdata
from tests.integration.peers import free_port
from tests.service.conftest import Running, wait_until
from tests.service.peers import ct_files, store
from tests.service.test_admin_api import audit_records
from tests.service.test_admin_routing import entry as queue_entry

PAGES = (
    "/studies",
    "/nodes",
    "/routing",
    "/worklist",
    "/procedures",
    "/status",
    "/audit",
    "/users",
)
ADMIN_ONLY = ("/users",)
HOSTILE = "<script>alert(1)</script>"
CZECH = "Dvořák^Antonín"


@dataclass
class Site:
    """The pages over a running in-process micropacs, and a token per role."""

    pacs: Running
    app: Starlette
    tokens: dict[Role, str]

    def get(self, path: str, role: Role | None = Role.ADMINISTRATOR) -> httpx.Response:
        return self.request("GET", path, role)

    def post(
        self, path: str, data: dict[str, str], role: Role | None = Role.ADMINISTRATOR
    ) -> httpx.Response:
        return self.request("POST", path, role, data=data)

    def request(
        self,
        method: str,
        path: str,
        role: Role | None,
        headers_extra: dict[str, str] | None = None,
        **kwargs: object,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        headers.update(headers_extra or {})

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pacs") as client:
                return await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

        return self.pacs.loop_call(call())


@pytest.fixture
def site(pacs: Running) -> Iterator[Site]:
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    context = pacs.admin.context
    gate = Middleware(
        Gate,
        authenticate=authenticator(settings, pacs.catalog),
        metrics_open=False,
        basic=False,
    )
    routes = [*page_routes(context), *pacs.qr.web_routes()]
    app = build_http_app(pacs.registry, {}, routes, access=gate)

    async def tokens() -> dict[Role, str]:
        made = {}
        for role in Role:
            made[role], _ = await context.credentials.create_token(role, f"{role} test")
        return made

    yield Site(pacs, app, pacs.loop_call(tokens()))


def stored_study(pacs: Running, folder: Path, name: str, description: str) -> str:
    spec = dicomdata.StudySpec(
        patient_name=name,
        patient_id="PID-UI-1",
        study_description=description,
        charset="ISO_IR 192",
    )
    files = ct_files(folder, 3, study=spec)
    assert store(pacs, *files) == [0, 0, 0]
    pacs.wait_indexed([dcmread(path).SOPInstanceUID for path in files])
    return spec.study_instance_uid


@pytest.mark.parametrize("role", list(Role))
def test_every_page_renders_for_each_role(site: Site, role: Role) -> None:
    for path in PAGES:
        answer = site.get(path, role)
        if path in ADMIN_ONLY and role is not Role.ADMINISTRATOR:
            assert answer.status_code == 403, path
            assert "administrator" in answer.text
            continue
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "<h1>" in answer.text


def test_without_credentials_a_browser_is_sent_to_login(site: Site) -> None:
    for path in PAGES:
        page = site.request("GET", f"{path}?x=1", None, headers_extra={"Accept": "text/html"})
        assert page.status_code == 303, path
        assert page.headers["location"] == f"/login?next={quote(path, safe='')}%3Fx%3D1"
        assert site.get(path, role=None).status_code == 401, path
    assert site.post("/nodes", {"ae_title": "X"}, role=None).status_code == 401


def test_a_czech_name_is_found_and_shown_as_stored(site: Site, tmp_path: Path) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "czech", CZECH, "CT hrudníku")
    found = site.get("/studies?name=Dvo%C5%99*")
    assert found.status_code == 200
    assert "Dvořák, Antonín" in found.text
    assert f"/studies/{study_uid}" in found.text
    assert "Dvořák" not in site.get("/studies?name=Novak*").text
    page = site.get(f"/studies/{study_uid}")
    assert "CT hrudníku" in page.text
    assert re.search(r"/dicom-web/studies/[\d.]+/series/[\d.]+/thumbnail", page.text)


def test_searches_views_and_previews_are_audited(site: Site, tmp_path: Path) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "audited", CZECH, "audited")
    assert site.get("/studies?name=Dvo%C5%99*", Role.VIEWER).status_code == 200
    page = site.get(f"/studies/{study_uid}", Role.VIEWER)
    series = re.search(rf"/studies/{re.escape(study_uid)}/series/([\d.]+)\"", page.text)
    assert series is not None, page.text
    assert site.get(f"/studies/{study_uid}/series/{series[1]}", Role.VIEWER).status_code == 200
    records = audit_records(site.pacs, {"query", "retrieve"}, 3)
    assert [(r.kind, r.detail, r.study_uids, r.role) for r in records] == [
        ("query", "studies searched: 1 matches", (study_uid,), "viewer"),
        ("retrieve", "study viewed", (study_uid,), "viewer"),
        ("retrieve", "series previewed", (study_uid,), "viewer"),
    ]


def test_hostile_text_from_the_archive_is_escaped(site: Site, tmp_path: Path) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "hostile", HOSTILE, HOSTILE)
    for path in ("/studies", f"/studies/{study_uid}"):
        answer = site.get(path)
        assert HOSTILE not in answer.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text, path


def test_a_viewer_sees_no_buttons_it_cannot_use(site: Site, tmp_path: Path) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "viewer", "Doe^Jane", "roles")
    viewer = site.get(f"/studies/{study_uid}", Role.VIEWER).text
    assert "Download ZIP" in viewer
    assert "Send" not in viewer and "Delete" not in viewer
    operator = site.get(f"/studies/{study_uid}", Role.OPERATOR).text
    assert "Send to a node" in operator and "Delete" not in operator
    administrator = site.get(f"/studies/{study_uid}", Role.ADMINISTRATOR).text
    assert "Delete study" in administrator


def test_bad_input_answers_a_reason(site: Site) -> None:
    answer = site.get("/studies/not-a-uid")
    assert answer.status_code == 400
    assert "not a UID" in answer.text
    answer = site.get("/studies/1.2.3.4")
    assert answer.status_code == 404
    assert "No such study" in answer.text
    answer = site.get("/studies?birth_date=yesterday")
    assert answer.status_code == 400
    assert "birth date" in answer.text.lower()
    answer = site.get("/studies?date_from=2024-02-01&date_to=2024-01-01")
    assert answer.status_code == 400
    assert "swap" in answer.text


def test_nodes_are_added_checked_and_refused_to_lower_roles(site: Site) -> None:
    form = {"ae_title": "CT_CONSOLE", "host": "127.0.0.1", "port": "104", "ae_group": "diag"}
    refused = site.post("/nodes", form, Role.OPERATOR)
    assert refused.status_code == 403
    assert "administrator" in refused.text
    assert site.post("/nodes", form, Role.VIEWER).status_code == 403  # the gate's
    added = site.post("/nodes", form)
    assert added.status_code == 303
    listed = site.get("/nodes", Role.VIEWER)
    assert "CT_CONSOLE" in listed.text
    assert "Add a node" not in listed.text and "Verify CT_CONSOLE" not in listed.text
    assert "Verify CT_CONSOLE" in site.get("/nodes", Role.OPERATOR).text
    again = site.post("/nodes", form)
    assert again.status_code == 409
    assert "already a node" in again.text
    for bad, reason in (
        ({**form, "ae_title": "A\\B"}, "backslash"),
        ({**form, "ae_title": "X" * 17}, "16 characters"),
        ({**form, "ae_title": "MR1", "port": "70000"}, "port"),
        ({**form, "ae_title": "MR1", "host": "a b"}, "host"),
    ):
        answer = site.post("/nodes", bad)
        assert answer.status_code == 422, bad
        assert reason in answer.text, (reason, answer.text)
    edited = site.post("/nodes/CT_CONSOLE", {**form, "description": "Konzole CT"})
    assert edited.status_code == 303
    assert "Konzole CT" in site.get("/nodes").text
    assert site.post("/nodes/NOPE/delete", {}).status_code == 404
    assert site.post("/nodes/CT_CONSOLE/delete", {}).status_code == 303
    assert "CT_CONSOLE" not in site.get("/nodes").text


def test_verifying_a_node_that_does_not_answer_says_why(site: Site) -> None:
    port = free_port()  # nothing listens there
    site.post("/nodes", {"ae_title": "GONE", "host": "127.0.0.1", "port": str(port)})
    answer = site.post("/nodes/GONE/verify", {}, Role.OPERATOR)
    assert answer.status_code == 200
    assert "no answer" in answer.text
    fragment = site.request(
        "POST", "/nodes/GONE/verify", Role.OPERATOR, headers_extra={"HX-Request": "true"}
    )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "Check the host, port and AE title" in fragment.text


def test_a_worklist_item_is_scheduled_and_canceled(site: Site) -> None:
    form = {
        "patient_name": "Nováková^Jana",
        "patient_id": "CZ-1",
        "accession": "ACC-77",
        "modality": "mr",
        "start": "2026-12-03T08:30",
        "station_ae": "MR_1",
        "description": "MR mozku",
    }
    assert site.post("/worklist", form, Role.VIEWER).status_code == 403
    missing = site.post("/worklist", {**form, "accession": ""}, Role.OPERATOR)
    assert missing.status_code == 422 and "accession number" in missing.text
    bad_start = site.post("/worklist", {**form, "start": "tomorrow"}, Role.OPERATOR)
    assert bad_start.status_code == 422 and "start" in bad_start.text
    assert site.post("/worklist", form, Role.OPERATOR).status_code == 303
    listed = site.get("/worklist", Role.VIEWER).text
    assert "Nováková, Jana" in listed and "MR mozku" in listed and "SCHEDULED" in listed
    assert "Schedule a procedure step" not in listed
    item = re.search(r'action="/worklist/([0-9a-f]+)/cancel"', site.get("/worklist").text)
    assert item is not None
    assert site.post(f"/worklist/{item.group(1)}/cancel", {}, Role.OPERATOR).status_code == 303
    assert "CANCELED" in site.get("/worklist").text
    assert site.post("/worklist/nope/cancel", {}, Role.OPERATOR).status_code == 404
    again = site.post(f"/worklist/{item.group(1)}/cancel", {}, Role.OPERATOR)
    assert again.status_code == 409 and "CANCELED already" in again.text


def test_users_and_tokens_are_managed_by_administrators_only(site: Site) -> None:
    user = {"name": "technik", "password": "dlouhé heslo 123", "role": "viewer"}
    assert site.post("/users", user, Role.OPERATOR).status_code == 403
    short = site.post("/users", {**user, "password": "short"})
    assert short.status_code == 422 and "12 characters" in short.text
    assert site.post("/users", {**user, "role": "root"}).status_code == 422
    assert site.post("/users", user).status_code == 303
    assert site.post("/users", user).status_code == 409
    assert site.post("/users/technik/role", {"role": "operator"}).status_code == 303
    page = site.get("/users").text
    assert re.search(r"<td>technik</td><td>operator</td>", page)
    made = site.post("/tokens", {"name": "PACS bridge", "role": "viewer"})
    assert made.status_code == 201
    secret = re.search(r'id="new-token">(mpt_[^<]+)<', made.text)
    assert secret is not None
    assert secret.group(1) not in site.get("/users").text  # shown once
    assert site.post("/users/technik/delete", {}).status_code == 303
    assert site.post("/users/technik/delete", {}).status_code == 404


def test_a_form_of_another_kind_is_refused(site: Site) -> None:
    answer = site.request("POST", "/nodes", Role.ADMINISTRATOR, json={"ae_title": "X"})
    assert answer.status_code == 415
    assert "x-www-form-urlencoded" in answer.text


def test_audit_filters_are_checked(site: Site) -> None:
    assert site.get("/audit?kind=login&outcome=0", Role.VIEWER).status_code == 200
    bad_kind = site.get("/audit?kind=coffee")
    assert bad_kind.status_code == 400 and "audit kind" in bad_kind.text
    assert site.get("/audit?outcome=5").status_code == 400
    assert site.get("/audit?since=last-week").status_code == 400


def test_the_viewer_link_follows_the_configured_template(site: Site, tmp_path: Path) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "viewer-link", "Doe^John", "link")
    assert "Open in viewer" not in site.get(f"/studies/{study_uid}").text
    admin = site.pacs.admin.context.settings.admin
    admin.viewer_url = "https://viewer.example.org/viewer?StudyInstanceUIDs={study_uid}"
    page = site.get(f"/studies/{study_uid}", Role.VIEWER).text
    assert f'href="https://viewer.example.org/viewer?StudyInstanceUIDs={study_uid}"' in page
    with pytest.raises(ValueError, match="study_uid"):
        type(admin).model_validate({"viewer_url": "https://viewer.example.org/"})


def test_without_htmx_the_pages_work_and_the_log_says_how_to_install_it(
    pacs: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(templating, "HTMX", tmp_path / "vendor" / "htmx.min.js")
    with caplog.at_level("WARNING", logger=templating.__name__):
        pages = templating.Pages([("/studies", "Studies")])
    assert "make htmx" in caplog.text
    html = pages.text("studies.html", filters={}, studies=[], page={}, title="Studies")
    assert "htmx.min.js" not in html
    assert '<form class="search" method="get" action="/studies"' in html


def test_htmx_is_served_from_the_archive_itself(site: Site) -> None:
    if not templating.HTMX.is_file():
        pytest.skip("htmx is not installed here: run `make htmx`")
    page = site.get("/studies").text
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in page
    served = site.get("/static/vendor/htmx.min.js", role=None)
    assert served.status_code == 200
    assert "htmx" in served.text[:2000]


def test_a_study_is_deleted_by_an_administrator_after_confirmation(
    site: Site, tmp_path: Path
) -> None:
    study_uid = stored_study(site.pacs, tmp_path / "deleted", "Smazat^Mě", "to delete")
    confirm = site.get(f"/studies/{study_uid}/delete")
    assert confirm.status_code == 200 and "removed from the archive for good" in confirm.text
    assert site.get(f"/studies/{study_uid}/delete", Role.OPERATOR).status_code == 403
    refused = site.post(f"/studies/{study_uid}/delete", {"reason": "x"}, Role.OPERATOR)
    assert refused.status_code == 403
    deleted = site.post(f"/studies/{study_uid}/delete", {"reason": "duplicate"})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/studies?deleted=3"
    assert "its 3 instances are being removed" in site.get(deleted.headers["location"]).text
    wait_until(
        lambda: site.get(f"/studies/{study_uid}").status_code == 404, what="the study is gone"
    )
    again = site.post(f"/studies/{study_uid}/delete", {"reason": "again"})
    assert again.status_code == 404


def test_a_logged_in_browser_sends_the_session_csrf_token_with_every_form(
    pacs: Running,
) -> None:
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    context = pacs.admin.context
    sessions = shared_sessions(settings.auth)
    events: list[str] = []

    async def report(event: LoginEvent) -> None:
        events.append(event.kind)

    gate = Middleware(
        Gate,
        authenticate=authenticator(settings, pacs.catalog, sessions),
        metrics_open=False,
        basic=False,
    )
    routes = [
        *login_routes(sessions, report, credentials=context.credentials, render=login_renderer()),
        *page_routes(context),
    ]
    app = build_http_app(pacs.registry, {}, routes, access=gate)
    pacs.loop_call(context.credentials.set_user("technik", "dlouhé heslo 123", Role.OPERATOR))

    def field(page: str, name: str) -> str:
        found = re.search(rf'name="{name}" value="([^"]*)"', page)
        assert found is not None, name
        return found.group(1)

    async def walk() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacs") as browser:
            login = await browser.get("/login?next=/nodes", headers={"Accept": "text/html"})
            assert login.status_code == 200
            assert 'for="f-username">User name' in login.text  # the pages' own template
            assert "content-security-policy" in login.headers
            form = {
                "username": "technik",
                "password": "dlouhé heslo 123",
                "csrf_token": field(login.text, "csrf_token"),
                "next": "/nodes",
            }
            wrong = await browser.post("/login", data={**form, "password": "x" * 12})
            assert wrong.status_code == 401 and "not right" in wrong.text
            form["csrf_token"] = field(wrong.text, "csrf_token")
            logged_in = await browser.post("/login", data=form)
            assert logged_in.status_code == 303 and logged_in.headers["location"] == "/nodes"
            worklist = await browser.get("/worklist")
            token = field(worklist.text, "csrf_token")
            assert token and f'{{"X-CSRF-Token": "{token}"}}' in worklist.text
            assert "Log out" in worklist.text and "technik (operator)" in worklist.text
            item = {
                "patient_name": "Nováková^Jana",
                "patient_id": "CZ-2",
                "accession": "ACC-78",
                "modality": "CT",
                "start": "2026-12-03T09:00",
            }
            refused = await browser.post("/worklist", data=item)
            assert refused.status_code == 403 and "CSRF" in refused.text
            scheduled = await browser.post("/worklist", data={**item, "csrf_token": token})
            assert scheduled.status_code == 303
            logout = await browser.post("/logout", data={"csrf_token": token})
            assert logout.status_code in (200, 303)
            after = await browser.get("/worklist", headers={"Accept": "text/html"})
            assert after.status_code == 303 and after.headers["location"].startswith("/login")

    pacs.loop_call(walk())
    assert events == ["login-failed", "login", "logout"]


def test_the_routing_page_lists_queues_and_entries_are_retried_and_canceled(site: Site) -> None:
    catalog = site.pacs.catalog
    dead = queue_entry("d1", "WS_UI", state=ForwardState.DEAD, attempts=10, error=HOSTILE)
    site.pacs.loop_call(catalog.enqueue_forwards([dead, queue_entry("w1", "WS_UI")]))

    def state_of(entry_id: str) -> ForwardState | None:
        found = site.pacs.loop_call(catalog.forward_entries("WS_UI", None, 10))
        return next((e.state for e in found if e.entry_id == entry_id), None)

    listed = site.get("/routing", Role.VIEWER)
    assert listed.status_code == 200
    assert 'href="/routing/WS_UI"' in listed.text
    assert "No rules file is set" in listed.text and "restart the router" in listed.text
    viewer = site.get("/routing/WS_UI", Role.VIEWER).text
    assert "1 waiting, 1 dead." in viewer
    assert HOSTILE not in viewer and "&lt;script&gt;" in viewer
    assert "Retry" not in viewer and "Cancel" not in viewer
    operator = site.get("/routing/WS_UI", Role.OPERATOR).text
    assert "Retry every dead entry" in operator and "Cancel the whole queue" in operator
    assert 'hx-confirm="Cancel this entry?' in operator
    assert site.post("/routing/WS_UI/retry", {"entry": "d1"}, Role.VIEWER).status_code == 403

    retried = site.post("/routing/WS_UI/retry", {"entry": "d1"}, Role.OPERATOR)
    assert retried.status_code == 303 and retried.headers["location"] == "/routing/WS_UI?retried=1"
    assert state_of("d1") is ForwardState.WAITING
    assert "1 entries retried" in site.get(retried.headers["location"], Role.OPERATOR).text
    forged = site.get("/routing/WS_UI?retried=%3Cb%3Eforged", Role.OPERATOR).text
    assert "forged" not in forged and 'class="notice"' not in forged

    asked = site.post("/routing/WS_UI/cancel", {"entry": "w1"}, Role.OPERATOR)
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    assert state_of("w1") is ForwardState.WAITING  # nothing canceled before the confirmation
    fragment = site.request(
        "POST",
        "/routing/WS_UI/cancel",
        Role.OPERATOR,
        headers_extra={"HX-Request": "true"},
        data={"entry": "w1", "confirmed": "yes"},
    )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "1 entries canceled" in fragment.text and 'id="queue-entries"' in fragment.text
    assert state_of("w1") is None
    gone = site.post("/routing/WS_UI/cancel", {"entry": "w1", "confirmed": "yes"}, Role.OPERATOR)
    assert gone.status_code == 303 and "gone=1" in gone.headers["location"]
    assert "no longer queued" in site.get(gone.headers["location"], Role.OPERATOR).text
    vague = site.post("/routing/WS_UI/cancel", {"confirmed": "yes"}, Role.OPERATOR)
    assert vague.status_code == 400 and "Choose an entry to cancel" in vague.text
    assert state_of("d1") is ForwardState.WAITING
    assert site.get("/routing/WS_UI?state=old").status_code == 400
    everything = site.post("/routing/WS_UI/cancel", {"state": "all", "confirmed": "yes"})
    assert everything.status_code == 303 and state_of("d1") is None
