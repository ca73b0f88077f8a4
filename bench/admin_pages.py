"""The admin's Studies page and REST search with 10,000 studies, and its memory zipping 2 GB.

10,000 studies (two instances each, 2,500 patients) are written into the catalog through
the index path, then ``micropacs serve`` (local users, a session) answers the same search
by name prefix as the Studies page, three ways: its HTML alone (time to first byte and
whole body, over one keep-alive connection), the whole page in headless Chromium (Debian's
package, through Playwright: navigation start to the load event, with its stylesheet and
htmx) and the REST API (``/api/studies``, a bearer token). Then a 2 GB study of four
multi-frame objects is stored with storescu and downloaded as a ZIP from
``/api/studies/{uid}/archive`` while the server's RSS is sampled.

    python -m bench.admin_pages [--studies 10000] [--requests 50] [--study-mb 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from tqdm import tqdm

from bench.common import (
    free_port,
    rss_bytes,
    save,
    start_serve,
    stop,
    summary_ms,
    synthetic_stored,
)
from bench.peak_rss import STUDY_OBJECTS, large_study, sampled, store
from micropacs.adapters.factory import open_catalog
from micropacs.config import IndexSettings
from micropacs.ports import Record
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from tests import dicomdata

INSTANCES_PER_STUDY = 2
PASSWORD = "bench password 0123456789"
SESSION_KEY = "bench-session-key-0123456789-0123456789"
CHROMIUM = "/usr/bin/chromium"


async def load(catalog_path: Path, studies: int) -> str:
    """Write ``studies`` synthetic studies; the name prefix the searches use."""
    catalog = await open_catalog(f"sqlite://{catalog_path}")
    indexer = Indexer(None, catalog, IndexMetrics(CollectorRegistry()), IndexSettings())  # type: ignore[arg-type]
    now = datetime.now(UTC).isoformat()
    batch: list[Record] = []
    first_name = ""
    for i in tqdm(range(studies * INSTANCES_PER_STUDY), unit="inst", desc="index", mininterval=2):
        ds = dicomdata.synthetic_header(i, instances_per_series=INSTANCES_PER_STUDY)
        first_name = first_name or str(ds.PatientName)
        event = synthetic_stored(ds, i, now)
        batch.append(Record("instance.stored", 0, i, event.key, event.to_bytes()))
        if len(batch) == 1000:
            await indexer.process(batch)
            batch = []
    if batch:
        await indexer.process(batch)
    await catalog.close()
    return first_name[:4] + "*"


def cli(data: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "micropacs", *args, "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def logged_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if token is None:
        raise RuntimeError("the login page has no CSRF token")
    login = {"username": "bench", "password": PASSWORD, "csrf_token": token[1]}
    if client.post("/login", data=login).status_code != 303:
        raise RuntimeError("the bench user could not log in")
    return client


def timed_get(client: httpx.Client, url: str, **kwargs: Any) -> tuple[float, float, int]:
    """Seconds to the first byte of the body, to its end, and how many bytes."""
    started = time.perf_counter()
    with client.stream("GET", url, **kwargs) as response:
        response.raise_for_status()
        chunks = response.iter_raw()
        first = next(chunks, b"")
        first_byte = time.perf_counter() - started
        size = len(first) + sum(len(chunk) for chunk in chunks)
    return first_byte, time.perf_counter() - started, size


def page_in_browser(base: str, url: str, requests: int) -> dict[str, Any]:
    """Navigation start to the load event of ``url``, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    samples: list[float] = []
    first_bytes: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(f"{base}/login")
        page.fill("input[name=username]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        for _ in range(requests):
            page.goto(f"{base}{url}", wait_until="load")
            timing = page.evaluate(
                "() => { const t = performance.getEntriesByType('navigation')[0];"
                " return [t.responseStart, t.loadEventEnd]; }"
            )
            first_bytes.append(timing[0] / 1000)
            samples.append(timing[1] / 1000)
        browser.close()
    return {"first_byte": summary_ms(first_bytes), "load_event": summary_ms(samples)}


def searches(base: str, prefix: str, token: str, requests: int) -> dict[str, Any]:
    page_url = f"/studies?name={prefix}"
    browser = logged_in(base)
    try:
        matches = len(re.findall(r'href="/studies/[0-9.]+"', browser.get(page_url).text))
        first, whole = [], []
        for _ in range(requests):
            ttfb, total, _size = timed_get(browser, page_url)
            first.append(ttfb)
            whole.append(total)
    finally:
        browser.close()
    with httpx.Client(base_url=base, timeout=60) as client:
        auth = {"authorization": f"Bearer {token}"}
        api_url = "/api/studies"
        params = {"patient_name": prefix, "limit": "50"}
        total_matches = client.get(api_url, params=params, headers=auth).json()["total"]
        api = [timed_get(client, api_url, params=params, headers=auth)[1] for _ in range(requests)]
    return {
        "name_prefix_matches": total_matches,
        "studies_on_page": matches,
        "studies_page_html": {"first_byte": summary_ms(first), "whole": summary_ms(whole)},
        "studies_page_chromium": page_in_browser(base, page_url, requests),
        "rest_api": summary_ms(api),
    }


def wait_indexed(base: str, study_uid: str, token: str) -> None:
    url = f"{base}/dicom-web/studies/{study_uid}/instances"
    headers = {"accept": "application/dicom+json", "authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = httpx.get(url, headers=headers)
        if response.status_code == 200 and len(response.json()) == STUDY_OBJECTS:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the {STUDY_OBJECTS} objects of the study were not indexed in 120 s")


def zipping(
    work: Path, base: str, port: int, pid: int, token: str, study_mb: int
) -> dict[str, Any]:
    study, paths = large_study(work, study_mb)
    store(port, paths)
    for path in paths:
        path.unlink()
    wait_indexed(base, study.study_instance_uid, token)
    baseline = rss_bytes(pid)
    with httpx.Client(base_url=base, timeout=600) as client, sampled(pid) as peak:
        url = f"/api/studies/{study.study_instance_uid}/archive"
        _first, seconds, size = timed_get(client, url, headers={"authorization": f"Bearer {token}"})
    return {
        "study_mb": study_mb,
        "zip_mb": round(size / 2**20, 1),
        "idle_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak() / 2**20, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--study-mb", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        prefix = asyncio.run(load(data / "catalog.db", args.studies))
        env = {
            **os.environ,
            "MICROPACS_AUTH__BACKEND": "local",
            "MICROPACS_AUTH__SESSION_KEY": SESSION_KEY,
        }
        cli(data, env, "users", "add", "bench", "--role", "operator", "--password", PASSWORD)
        token = cli(data, env, "tokens", "add", "--role", "operator")
        port, http_port = free_port(), free_port()
        server = start_serve(data, port, http_port, env=env)
        base = f"http://127.0.0.1:{http_port}"
        try:
            result = {
                "studies": args.studies,
                "search": searches(base, prefix, token, args.requests),
                "zip": zipping(work, base, port, server.pid, token, args.study_mb),
            }
        finally:
            stop(server)
        save("admin_pages", result)


if __name__ == "__main__":
    main()
