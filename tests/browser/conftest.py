"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real
``micropacs serve`` the tests start; never a browser build of Playwright's own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = "MICROPACS_SCREENSHOTS_DIR"
"""When set (``make screenshots``), each screenshot is copied there too, for docs/."""


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[BrowserContext]:
    """A Chromium context with a fresh user-data-dir, for one test."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install it with `make chromium` (Debian's package)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1366, "height": 768},
            locale="cs-CZ",
        )
        try:
            yield context
        finally:
            context.close()


class Screenshots:
    """Saves a page's screenshot in the test's folder (and for the docs when asked)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        target = os.environ.get(SCREENSHOTS, "")
        self.docs = Path(target) if target else None

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if self.docs is not None:
            self.docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.docs / path.name)
        return path


@pytest.fixture
def screenshots(tmp_path: Path) -> Screenshots:
    return Screenshots(tmp_path / "screenshots")
