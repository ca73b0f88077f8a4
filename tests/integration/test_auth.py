"""Who may call the HTTP APIs: tokens, users, OpenID Connect, roles, and the loopback default."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import dicomdata
from tests.integration.peers import echo
from tests.integration.server import Server, micropacs, micropacs_env, start_server
from tests.integration.test_dicomweb import multipart_body
from tests.integration.token_issuer import TokenIssuer, new_key, token_issuer

STUDIES = "/dicom-web/studies"


def token(server: Server, role: str, *extra: str) -> str:
    made = micropacs(
        "tokens", "add", "--role", role, *extra, data_dir=server.data_dir, env=server.env
    )
    return made.stdout.strip()


def bearer(text: str) -> dict[str, str]:
    return {"authorization": f"Bearer {text}"}


def stow(server: Server, headers: dict[str, str], tmp_path: Path) -> httpx.Response:
    (path,) = dicomdata.make_study(tmp_path / f"stow-{len(list(tmp_path.iterdir()))}", 1, "CT")
    content_type, body = multipart_body([path.read_bytes()])
    return httpx.post(
        f"{server.http}{STUDIES}", content=body, headers={**headers, "content-type": content_type}
    )


@pytest.fixture(scope="module")
def local_auth(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    from tests.integration.conftest import isolated_env

    stack = request.getfixturevalue("shared_stack")
    env = {**isolated_env(stack), "MICROPACS_AUTH__BACKEND": "local"}
    server = start_server(tmp_path_factory.mktemp("auth") / "data", env=env)
    yield server
    server.stop()


def test_no_credentials_answer_401_with_a_challenge(local_auth: Server) -> None:
    answer = httpx.get(f"{local_auth.http}{STUDIES}")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Bearer realm="micropacs"')
    assert "Basic" in answer.headers["www-authenticate"]
    for wrong in ("mpt_000000000000." + "x" * 43, "not-a-token", "mpt_"):
        assert httpx.get(f"{local_auth.http}{STUDIES}", headers=bearer(wrong)).status_code == 401
    assert "authentication: local" in local_auth.log()


def test_health_readiness_and_metrics_stay_open(local_auth: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{local_auth.http}{path}").status_code == 200


def test_a_viewer_reads_but_may_not_store(local_auth: Server, tmp_path: Path) -> None:
    viewer = bearer(token(local_auth, "viewer", "--description", "reading room"))
    assert httpx.get(f"{local_auth.http}{STUDIES}", headers=viewer).status_code in (200, 204)
    refused = stow(local_auth, viewer, tmp_path)
    assert refused.status_code == 403
    assert "viewer" in refused.json()["error"]


def test_an_operator_stores(local_auth: Server, tmp_path: Path) -> None:
    operator = bearer(token(local_auth, "operator"))
    assert stow(local_auth, operator, tmp_path).status_code == 200


def test_a_removed_token_is_refused_at_once(local_auth: Server) -> None:
    text = token(local_auth, "viewer")
    assert httpx.get(f"{local_auth.http}{STUDIES}", headers=bearer(text)).status_code != 401
    token_id = text.removeprefix("mpt_").split(".")[0]
    listed = micropacs("tokens", "list", data_dir=local_auth.data_dir, env=local_auth.env)
    assert token_id in listed.stdout and text.split(".")[1] not in listed.stdout
    micropacs("tokens", "remove", token_id, data_dir=local_auth.data_dir, env=local_auth.env)
    assert httpx.get(f"{local_auth.http}{STUDIES}", headers=bearer(text)).status_code == 401


def test_a_tampered_token_is_refused(local_auth: Server) -> None:
    text = token(local_auth, "viewer")
    tampered = text[:-1] + ("A" if text[-1] != "A" else "B")
    assert httpx.get(f"{local_auth.http}{STUDIES}", headers=bearer(tampered)).status_code == 401


def test_users_authenticate_with_basic(local_auth: Server) -> None:
    micropacs(
        "users",
        "add",
        "jnovak",
        "--role",
        "viewer",
        "--password",
        "correct horse battery",
        data_dir=local_auth.data_dir,
        env=local_auth.env,
    )

    def basic(password: str) -> dict[str, str]:
        return {
            "authorization": "Basic " + base64.b64encode(f"jnovak:{password}".encode()).decode()
        }

    url = f"{local_auth.http}{STUDIES}"
    assert httpx.get(url, headers=basic("correct horse battery")).status_code in (200, 204)
    assert httpx.get(url, headers=basic("correct horse battery")).status_code in (200, 204)
    assert httpx.get(url, headers=basic("wrong horse battery!")).status_code == 401
    assert httpx.get(url, headers={"authorization": "Basic %%%"}).status_code == 401


def test_a_short_password_is_refused(local_auth: Server) -> None:
    made = micropacs(
        "users",
        "add",
        "short",
        "--role",
        "viewer",
        "--password",
        "tooshort",
        data_dir=local_auth.data_dir,
        env=local_auth.env,
        check=False,
    )
    assert made.returncode != 0 and "12 characters" in made.stderr


def test_no_origin_is_allowed_by_default(local_auth: Server) -> None:
    preflight = httpx.options(
        f"{local_auth.http}{STUDIES}",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_loopback_without_authentication_serves_local_clients(server: Server) -> None:
    assert httpx.get(f"{server.http}{STUDIES}").status_code in (200, 204)
    assert "open to local clients without credentials" in server.log()


def test_any_other_address_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    started = subprocess.run(
        [
            *(sys.executable, "-m", "micropacs", "serve", "--data-dir", str(tmp_path / "data")),
            *("--host", "0.0.0.0", "--dicom-port", "0", "--http-port", "0"),
        ],
        capture_output=True,
        text=True,
        env=micropacs_env(),
        timeout=120,
    )
    assert started.returncode != 0
    assert "MICROPACS_AUTH__BACKEND" in started.stderr


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    with token_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def oidc_server(
    issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    from tests.integration.conftest import isolated_env

    env = {
        **isolated_env(request.getfixturevalue("shared_stack")),
        "MICROPACS_AUTH__BACKEND": "oidc",
        "MICROPACS_AUTH__OIDC_ISSUER": issuer.url,
        "MICROPACS_AUTH__OIDC_AUDIENCE": "micropacs",
        "MICROPACS_AUTH__OIDC_ROLE_PREFIX": "pacs-",
    }
    server = start_server(tmp_path_factory.mktemp("oidc") / "data", env=env)
    yield server
    server.stop()


def test_oidc_tokens_are_checked_against_the_issuer(
    oidc_server: Server, issuer: TokenIssuer, tmp_path: Path
) -> None:
    url = f"{oidc_server.http}{STUDIES}"
    viewer = issuer.token(roles=["pacs-viewer"])
    assert httpx.get(url, headers=bearer(viewer)).status_code in (200, 204)
    assert stow(oidc_server, bearer(viewer), tmp_path).status_code == 403
    operator = issuer.token(roles=["pacs-operator", "other-app-admin"])
    assert stow(oidc_server, bearer(operator), tmp_path).status_code == 200
    refused = {
        "wrong audience": issuer.token(audience="another-app", roles=["pacs-viewer"]),
        "expired": issuer.token(lifetime=-120, roles=["pacs-viewer"]),
        "another signer": issuer.token(key=new_key(), roles=["pacs-viewer"]),
        "another issuer": issuer.token(issuer="http://127.0.0.1:9/evil", roles=["pacs-viewer"]),
        "no micropacs role": issuer.token(roles=["viewer", "pacs-nothing"]),
    }
    for why, text in refused.items():
        assert httpx.get(url, headers=bearer(text)).status_code == 401, why
    assert httpx.get(url).status_code == 401


def _peak_rss(server: Server) -> int:
    """The server process's peak resident memory so far, bytes (Linux VmHWM)."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def test_a_flood_of_wrong_passwords_is_bounded(local_auth: Server) -> None:
    """60 concurrent wrong passwords for one user: at most a couple of argon2 hashes run at
    once (64 MiB each), the excess is answered 503 or 429 with Retry-After at once, and
    /healthz and a C-ECHO go on answering."""
    micropacs(
        "users", "add", "flood.target", "--role", "viewer", "--password", "the real password",
        data_dir=local_auth.data_dir, env=local_auth.env,
    )  # fmt: skip
    wrong = base64.b64encode(b"flood.target:not the password").decode()
    url = f"{local_auth.http}{STUDIES}"
    before = _peak_rss(local_auth)

    async def flood() -> tuple[list[httpx.Response], list[float]]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            attempts = [
                asyncio.create_task(client.get(url, headers={"authorization": f"Basic {wrong}"}))
                for _ in range(60)
            ]
            pauses = []
            while not all(attempt.done() for attempt in attempts):
                started = time.monotonic()
                assert (await client.get(f"{local_auth.http}/healthz")).status_code == 200
                assert await asyncio.to_thread(echo, local_auth) == 0x0000
                pauses.append(time.monotonic() - started)
                await asyncio.sleep(0.1)
            return await asyncio.gather(*attempts), pauses

    answers, pauses = asyncio.run(flood())
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429, 503}
    assert statuses.count(503) >= 1
    assert all("retry-after" in a.headers for a in answers if a.status_code in (429, 503))
    assert max(pauses, default=0.0) < 3.0, pauses
    # Two hashes of 64 MiB at most at once; six (the default pool) would pass 384 MiB.
    assert _peak_rss(local_auth) - before < 256 * 2**20
