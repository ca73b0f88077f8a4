"""Forwarding end to end: ``micropacs serve`` with a rules file forwards what storescu
stores to DCMTK storescp destinations. One destination stopped for a while never holds up
the other, and gets everything once it is back; a SIGKILL of serve with its queue full
loses nothing: after the restart every instance arrives."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from tests import dicomdata
from tests.integration.peers import DCMTK_ENV, free_port, storescu, wait_for_port
from tests.integration.server import Server, micropacs, start_server

RULES = """
rules:
  - name: everything
    forward:
      - destination: LIVE
      - destination: LATE
        transfer_syntax: explicit-vr-little-endian
"""


@dataclass
class Storescp:
    """A DCMTK storescp writing what it receives into ``folder``; started and stopped at will."""

    ae_title: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    unique: bool = False
    """Each reception in a file of its own (``+uf``), so that a copy sent twice shows."""

    def start(self) -> None:
        naming = ["+uf"] if self.unique else []
        self.process = subprocess.Popen(
            [
                *("storescp", "-aet", self.ae_title, "+xa", *naming),
                *("-od", str(self.folder), str(self.port)),
            ],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def received(self) -> set[str]:
        """The SOP Instance UIDs of the files it wrote (a file sent twice is written once,
        unless ``unique``)."""
        return set(self.receptions())

    def receptions(self) -> list[str]:
        """The SOP Instance UID of every file it wrote."""
        return [
            str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            for path in self.folder.iterdir()
            if path.is_file() and not path.name.startswith(".")
        ]

    def files(self) -> int:
        return sum(1 for path in self.folder.iterdir() if not path.name.startswith("."))


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[dict[str, Storescp]]:
    found = {}
    for title in ("LIVE", "LATE"):
        folder = tmp_path / title.lower()
        folder.mkdir()
        found[title] = Storescp(title, free_port(), folder)
    try:
        yield found
    finally:
        for peer in found.values():
            peer.stop()


def router_env(tmp_path: Path, server_env: dict[str, str]) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return {
        **server_env,
        "MICROPACS_ROUTER__RULES_FILE": str(rules),
        # Quick retries, and no entry given up on however long a destination is away.
        "MICROPACS_ROUTER__BACKOFF_INITIAL": "0.2",
        "MICROPACS_ROUTER__BACKOFF_MAX": "1",
        "MICROPACS_ROUTER__MAX_ATTEMPTS": "10000",
        "MICROPACS_ROUTER__LEASE": "3",
        "MICROPACS_ROUTER__STATS_INTERVAL": "0.5",
    }


def register(data_dir: Path, env: dict[str, str], peer: Storescp) -> None:
    title, port = peer.ae_title, str(peer.port)
    micropacs("nodes", "add", title, "127.0.0.1", port, data_dir=data_dir, env=env)


def serve_to(
    data_dir: Path, env: dict[str, str], peers: dict[str, Storescp]
) -> tuple[Path, Server]:
    """``micropacs serve`` with both destinations registered, LIVE started, LATE not."""
    for peer in peers.values():
        register(data_dir, env, peer)
    peers["LIVE"].start()
    return data_dir, start_server(data_dir, env=env)


def wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(0.1)


def queues(server: Server) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{server.http}/router/queues", timeout=10)
    assert answer.status_code == 200, answer.text
    return {queue["destination"]: queue for queue in answer.json()}


def uids_of(files: list[Path]) -> set[str]:
    return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files}


def test_a_stopped_destination_gets_everything_later_and_holds_up_nobody(
    tmp_path: Path, server_env: dict[str, str], peers: dict[str, Storescp]
) -> None:
    live, late = peers["LIVE"], peers["LATE"]
    env = router_env(tmp_path, server_env)
    _, server = serve_to(tmp_path / "data", env, peers)  # LATE is not running yet
    try:
        files = dicomdata.make_ct_series(tmp_path / "ct", 40, rows=64, cols=64)
        storescu(server, files)
        sent = uids_of(files)
        wait_for(lambda: live.received() == sent, "LIVE got every instance while LATE is down")
        assert late.received() == set()

        def failing() -> bool:
            queue = queues(server).get("LATE", {})
            return queue.get("waiting") == len(sent) and queue.get("failing_since") is not None

        wait_for(failing, "LATE's queue holds everything and LATE is failing")

        late.start()
        wait_for(lambda: late.received() == sent, "LATE got every instance once it was back")
        wait_for(lambda: queues(server) == {}, "every queue empty")
        metrics = httpx.get(f"{server.http}/metrics", timeout=10).text
        assert 'micropacs_router_sent_total{destination="LATE"} 40.0' in metrics
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_of_serve_with_a_full_queue_loses_nothing(
    tmp_path: Path, server_env: dict[str, str], peers: dict[str, Storescp]
) -> None:
    live, late = peers["LIVE"], peers["LATE"]
    env = router_env(tmp_path, server_env)
    data_dir, server = serve_to(tmp_path / "data", env, peers)
    files = dicomdata.make_ct_series(tmp_path / "ct", 200, rows=64, cols=64)
    sent = uids_of(files)
    try:
        storescu(server, files)
    finally:
        # Killed at once: the router may be reading the events, queueing them or sending
        # LIVE's.
        server.kill()

    late.start()
    restarted = start_server(data_dir, env=env)
    try:
        wait_for(lambda: live.received() == sent, "LIVE got every instance after the restart")
        wait_for(lambda: late.received() == sent, "LATE got every instance after the restart")
        wait_for(lambda: queues(restarted) == {}, "every queue empty")
    finally:
        restarted.stop()


@pytest.mark.slow
def test_sigkill_of_serve_in_the_middle_of_a_drain_sends_the_rest_once_restarted(
    tmp_path: Path, server_env: dict[str, str], peers: dict[str, Storescp]
) -> None:
    """Killed while its router is sending a queue: every instance arrives after the
    restart, and none more than twice (a batch in flight, not acknowledged, is sent again:
    at least once)."""
    late = peers["LATE"]
    late.unique = True
    env = {**router_env(tmp_path, server_env), "MICROPACS_ROUTER__SEND_BATCH": "20"}
    data_dir, server = serve_to(tmp_path / "data", env, peers)
    files = dicomdata.make_ct_series(tmp_path / "ct", 300, rows=256, cols=256)
    sent = uids_of(files)
    try:
        storescu(server, files)

        def queued() -> bool:
            return queues(server).get("LATE", {}).get("waiting") == len(sent)

        wait_for(queued, "LATE's queue holds everything")
        late.start()
        deadline = time.monotonic() + 120
        while late.files() < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        server.kill()
    arrived_before = late.files()
    assert 20 <= arrived_before < len(sent), f"{arrived_before} arrived: not in mid-drain"

    restarted = start_server(data_dir, env=env)
    try:
        wait_for(lambda: late.received() == sent, "LATE got every instance after the restart")
        wait_for(lambda: queues(restarted) == {}, "every queue empty")
    finally:
        restarted.stop()
    receptions = late.receptions()
    twice = len(receptions) - len(set(receptions))
    # At most the batch in flight when serve was killed is sent again.
    assert 0 <= twice <= 20, f"{twice} sent twice"
    assert max(receptions.count(uid) for uid in sent) <= 2


def test_a_wrong_rules_file_stops_the_start_and_says_what_to_fix(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: ct, forward: [{destination: WS1, transfer_syntax: x}]}\n")
    with pytest.raises(RuntimeError) as refused:
        start_server(tmp_path / "data", env={"MICROPACS_ROUTER__RULES_FILE": str(rules)})
    assert "rule 'ct' (rules[0]): forward[0].transfer_syntax: 'x' is not a syntax" in str(
        refused.value
    )
