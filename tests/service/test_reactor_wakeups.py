"""pynetdicom's reactors wait for what wakes them (:mod:`micropacs.dimse.wakeups`):
idle associations do not spin, messages still flow both ways at once, and every
wake-up socket is closed with its association."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider

from micropacs.dimse import wakeups
from tests.service.conftest import Running, wait_until
from tests.service.peers import VERIFICATION, associate

IDLE_SECONDS = 1.0


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def live_associations() -> list[Association]:
    return [t for t in threading.enumerate() if isinstance(t, Association)]


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[float]]]:
    """When each pass of a DUL reactor (its socket check) and of an association reactor
    (its look for a DIMSE message) began, in this process: pynetdicom's loops call both
    once a pass, with or without :mod:`~micropacs.dimse.wakeups`."""
    seen: dict[str, list[float]] = {"dul": [], "association": []}
    transport = DULServiceProvider._is_transport_event
    get_msg = DIMSEServiceProvider.get_msg

    def dul_pass(self: DULServiceProvider) -> bool:
        seen["dul"].append(time.monotonic())
        return transport(self)

    def association_pass(self: DIMSEServiceProvider, block: bool = False) -> Any:
        if not block:
            seen["association"].append(time.monotonic())
        return get_msg(self, block)

    monkeypatch.setattr(DULServiceProvider, "_is_transport_event", dul_pass)
    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", association_pass)
    yield seen


def test_idle_associations_wait_instead_of_polling(
    pacs: Running, passes: dict[str, list[float]]
) -> None:
    with ExitStack() as stack:
        for _ in range(4):
            assoc = stack.enter_context(associate(pacs, [VERIFICATION]))
            assert assoc.send_c_echo().Status == 0x0000
        time.sleep(0.2)  # settled: both ends of every association idle
        start = time.monotonic()
        time.sleep(IDLE_SECONDS)
    # 8 associations (4 requestors here, 4 acceptors in micropacs): at most a pass per
    # LONGEST_WAIT each when nothing happens; pynetdicom's loops slept 1 ms, 8,000 passes.
    bound = 8 * (IDLE_SECONDS / wakeups.LONGEST_WAIT) * 1.5
    for reactor, times in passes.items():
        idle = [t for t in times if start <= t < start + IDLE_SECONDS]
        assert len(idle) <= bound, reactor


def test_many_requests_in_a_row_are_answered(pacs: Running) -> None:
    with associate(pacs, [VERIFICATION]) as assoc:
        statuses = [int(assoc.send_c_echo().Status) for _ in range(200)]
    assert statuses == [0x0000] * 200


def test_requests_on_parallel_associations_all_complete(pacs: Running) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def echo_many() -> None:
        with associate(pacs, [VERIFICATION]) as assoc:
            done = [int(assoc.send_c_echo().Status) for _ in range(25)]
        with lock:
            results.extend(done)

    threads = [threading.Thread(target=echo_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [0x0000] * 100


def test_wakeup_sockets_close_with_their_associations(pacs: Running) -> None:
    with associate(pacs, [VERIFICATION]) as assoc:
        assert assoc.send_c_echo().Status == 0x0000
    wait_until(lambda: not live_associations(), what="the first association to end")
    before = open_fds()
    for _ in range(20):
        with associate(pacs, [VERIFICATION]) as assoc:
            assert assoc.send_c_echo().Status == 0x0000
    wait_until(lambda: not live_associations(), what="every association to end")
    # A leak would be 4 descriptors per association (a socket pair at each end); a few
    # may be opened meanwhile by the server's own connections to its stores.
    wait_until(lambda: open_fds() - before < 10, what="their descriptors to be closed")


def test_an_abort_from_another_thread_ends_an_idle_association(pacs: Running) -> None:
    with associate(pacs, [VERIFICATION]) as assoc:
        assert assoc.send_c_echo().Status == 0x0000
        time.sleep(0.2)  # both reactors idle, waiting
        assoc.abort()
        wait_until(lambda: not assoc.is_alive(), timeout=5, what="the association to end")
        assert assoc.is_aborted
