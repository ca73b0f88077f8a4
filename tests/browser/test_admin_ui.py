"""The admin web UI in a real browser, against a real ``micropacs serve``.

One walk through what a technologist and an administrator do: log in, find a study
stored with storescu by its Czech patient name, open it, see its thumbnails, scroll its
preview with the keyboard and the mouse wheel, add a node pointing at a DCMTK storescp,
verify it, send the study there (storescp receives every instance), delete the study
(findscu no longer finds it), and find each of those actions on the audit page. Every
page's screenshot is saved in the test's folder (``make screenshots`` copies them into
docs/screenshots/). A second visit, of the Routing page, runs ``serve`` with rules forwarding
to a storescp and to an archive that is down, and retries and cancels the dead entries.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from services.admin.web.templating import HTMX
from tests import dicomdata
from tests.browser.conftest import Screenshots
from tests.integration.peers import DCMTK_ENV, findscu, free_port, storescu, wait_for_port
from tests.integration.server import Server, micropacs, start_server

pytestmark = pytest.mark.browser

USER = "radiology-admin"
PASSWORD = "correct horse battery"
CZECH = "Dvořák^Antonín"
INSTANCES = 4
TIMEOUT_MS = 30_000
ALL_LOADED = """selector => {
  const images = [...document.querySelectorAll(selector)];
  return images.length > 0 && images.every(image => image.complete && image.naturalWidth > 0);
}"""
"""Whether every image of a selector has loaded a picture."""


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "data"
    env = {"MICROPACS_AUTH__BACKEND": "local"}
    data.mkdir()
    micropacs(
        "users",
        "add",
        USER,
        "--role",
        "administrator",
        "--password",
        PASSWORD,
        data_dir=data,
        env=env,
    )
    running = start_server(data, env=env)
    yield running
    running.stop()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, out = free_port(), tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(
        ["storescp", "-aet", "WORKSTATION", "+xa", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, scp)
    yield port, out
    scp.terminate()
    scp.wait(10)


def stored_study(server: Server, folder: Path) -> tuple[str, list[Path]]:
    spec = dicomdata.StudySpec(
        patient_name=CZECH,
        patient_id="CZ-4711",
        study_description="CT hrudníku",
        charset="ISO_IR 192",
    )
    files = dicomdata.make_study(folder, INSTANCES, "CT", study=spec)
    storescu(server, files)
    return spec.study_instance_uid, files


def test_a_study_found_sent_and_deleted_through_the_browser(
    server: Server,
    storescp: tuple[int, Path],
    browser_context: BrowserContext,
    screenshots: Screenshots,
    tmp_path: Path,
) -> None:
    assert httpx.get(f"{server.http}/login").status_code == 200, "no login page served"
    study_uid, files = stored_study(server, tmp_path / "study")
    port, received = storescp
    page = browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    page.goto(f"{server.http}/studies")
    expect(page).to_have_url(f"{server.http}/login?next=%2Fstudies")
    screenshots.take(page, "login")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Studies")).to_be_visible()

    page.get_by_label("Patient name").fill("Dvoř*")
    page.get_by_role("button", name="Search").click()
    link = page.get_by_role("link", name="Dvořák, Antonín")
    expect(link).to_be_visible()
    screenshots.take(page, "studies")
    link.click()

    expect(page.get_by_text("CT hrudníku")).to_be_visible()
    page.wait_for_function(ALL_LOADED, arg=".series img")
    screenshots.take(page, "study")

    page.locator(".series a").first.click()
    preview = page.get_by_role("group", name="Series preview")
    expect(page.locator("#preview-position")).to_have_text(f"1 / {INSTANCES}")
    preview.focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#preview-position")).to_have_text(f"2 / {INSTANCES}")
    preview.hover()
    page.mouse.wheel(0, 120)
    expect(page.locator("#preview-position")).to_have_text(f"3 / {INSTANCES}")
    page.keyboard.press("End")
    expect(page.locator("#preview-position")).to_have_text(f"{INSTANCES} / {INSTANCES}")
    page.wait_for_function(ALL_LOADED, arg=".preview img")
    screenshots.take(page, "series-preview")

    page.get_by_role("link", name="Nodes").click()
    page.get_by_label("AE title").fill("WORKSTATION")
    page.get_by_label("Host").fill("127.0.0.1")
    page.get_by_label("Port").fill(str(port))
    page.get_by_label("Description").fill("Pracovní stanice 1")
    page.get_by_role("button", name="Add node").click()
    expect(page.get_by_text("Node WORKSTATION saved.")).to_be_visible()
    page.get_by_role("button", name="Verify WORKSTATION").click()
    expect(page.get_by_text("answered (0x0000) in")).to_be_visible()
    screenshots.take(page, "nodes")

    page.goto(f"{server.http}/studies/{study_uid}")
    page.get_by_label("Node", exact=True).select_option("WORKSTATION")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".job[data-state=completed]")).to_be_visible()
    expect(page.locator(".job")).to_contain_text(f"{INSTANCES} of {INSTANCES} sent")
    screenshots.take(page, "send")
    wait_for(lambda: len(list(received.glob("*"))) == INSTANCES, "storescp received every instance")

    page.get_by_role("link", name="Delete study…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason").fill("duplicate study")
    screenshots.take(page, "delete-dialog")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Study deletion requested")).to_be_visible()

    def gone() -> bool:
        return not findscu(
            server,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid},
            tmp_path / "find",
        )

    wait_for(gone, "findscu no longer finds the study")

    for path in ("/worklist", "/procedures", "/status", "/users"):
        page.goto(f"{server.http}{path}")
        expect(page.locator("h1")).to_be_visible()
        screenshots.take(page, path.strip("/"))

    # The index stores audit records as it consumes them: reload until every one is there.
    # The user's own records (findscu's associations above are the test's, not the user's).
    wanted = (
        "login",
        "node-changed",
        "study-sent",
        "study-deleted",
        "node WORKSTATION verified",
        "studies searched",
        "study viewed",
        "series previewed",
    )

    def audited() -> bool:
        page.goto(f"{server.http}/audit?actor={USER}")
        shown = page.get_by_role("table", name="Audit records").inner_text()
        return all(text in shown for text in wanted)

    wait_for(audited, f"the audit page shows {', '.join(wanted)}")
    screenshots.take(page, "audit")
    assert len(files) == INSTANCES


ROUTING_RULES = """\
rules:
  - name: ct-to-the-workstation
    match: {modality: CT}
    forward: [{destination: WORKSTATION}]
  - name: everything-to-the-archive
    forward: [{destination: ARCHIVE, transfer_syntax: explicit-vr-little-endian}]
"""


def test_the_routing_page_lists_the_queues_and_retries_and_cancels_dead_entries(
    storescp: tuple[int, Path],
    browser_context: BrowserContext,
    screenshots: Screenshots,
    tmp_path: Path,
) -> None:
    port, received = storescp
    data, rules = tmp_path / "data", tmp_path / "rules.yaml"
    rules.write_text(ROUTING_RULES, encoding="utf-8")
    env = {
        "MICROPACS_AUTH__BACKEND": "local",
        "MICROPACS_ROUTER__RULES_FILE": str(rules),
        "MICROPACS_ROUTER__MAX_ATTEMPTS": "1",
        "MICROPACS_ROUTER__BACKOFF_INITIAL": "0.05",
        "MICROPACS_ROUTER__BACKOFF_MAX": "0.2",
        "MICROPACS_ROUTER__STATS_INTERVAL": "0.2",
    }
    data.mkdir()
    micropacs(
        "users", "add", USER, "--role", "operator", "--password", PASSWORD, data_dir=data, env=env
    )
    micropacs("nodes", "add", "WORKSTATION", "127.0.0.1", str(port), data_dir=data, env=env)
    # Nobody listens at the archive's port: its entries die after their one attempt.
    micropacs("nodes", "add", "ARCHIVE", "127.0.0.1", str(free_port()), data_dir=data, env=env)
    server = start_server(data, env=env)
    try:
        stored_study(server, tmp_path / "study")
        wait_for(lambda: len(list(received.glob("*"))) == INSTANCES, "the workstation got all")
        page = browser_context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("dialog", lambda dialog: dialog.accept())  # htmx's confirmation, when present
        page.goto(f"{server.http}/routing")
        page.get_by_label("User name").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Routing")).to_be_visible()

        def all_dead() -> bool:
            page.goto(f"{server.http}/routing")
            row = page.get_by_role("row").filter(has_text="ARCHIVE").first.inner_text()
            return f"\t{INSTANCES}\t" in row and "none" in row

        wait_for(all_dead, "the archive's entries listed dead")
        expect(page.get_by_role("table", name="Rules")).to_contain_text("everything-to-the-archive")
        screenshots.take(page, "routing")

        page.get_by_role("link", name="ARCHIVE").first.click()
        expect(page.get_by_text(f"0 waiting, {INSTANCES} dead.")).to_be_visible()
        expect(page.locator("#queue-entries")).to_contain_text("unreachable")
        screenshots.take(page, "routing-queue")
        page.get_by_role("button", name="Retry", exact=True).first.click()
        expect(page.get_by_text("1 entries retried")).to_be_visible()

        page.get_by_role("button", name="Cancel the whole queue").click()
        if not HTMX.is_file():  # without htmx the server asks on a page of its own
            expect(page.get_by_role("heading", name="Cancel entries of ARCHIVE?")).to_be_visible()
            page.get_by_role("button", name="Cancel the entries").click()
        expect(page.get_by_text(f"{INSTANCES} entries canceled")).to_be_visible()
        expect(page.get_by_text("0 waiting, 0 dead.")).to_be_visible()
    finally:
        server.stop()
