"""The read barrier inside the services (micropacs/read_barrier.py): a read waits for the
index to apply what was acknowledged before it, within its bound, on the real SQLite log.

Each test starts with the index stopped, so what the barrier waits for is certain: a
read issued then is still waiting when the index starts, and finds what it waited for;
or, with the index left stopped, it answers within the bound and is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from pydicom import dcmread
from pydicom.uid import generate_uid

from micropacs.dicom.json_model import to_json
from micropacs.ports import WorklistItem
from services.worklist.metrics import WorklistMetrics
from services.worklist.mpps import PerformedSteps
from services.worklist.scheduling import Scheduler
from tests.service.conftest import Running, StartPacs, wait_until
from tests.service.peers import ct_files, find_once, store, study_identifier
from tests.worklistdata import completed, in_progress, scheduled

T = TypeVar("T")


def outcomes(pacs: Running, reader: str, outcome: str) -> float:
    labels = {"reader": reader, "outcome": outcome}
    return pacs.registry.get_sample_value("micropacs_read_barrier_total", labels) or 0.0


def started_later(pacs: Running, read: Coroutine[Any, Any, T]) -> T:
    """``read`` begun with the index stopped; the index started while it waits; its result."""
    pending: Future[T] = asyncio.run_coroutine_threadsafe(read, pacs._loop)
    time.sleep(0.3)
    assert not pending.done(), "the read did not wait for the index"
    pacs.start_background()
    return pending.result(timeout=10)


def study_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_a_c_find_waits_for_the_index_then_finds_what_was_stored(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(index=False, barrier_timeout=10)
    files = ct_files(tmp_path / "in", 3)
    assert store(pacs, *files) == [0x0000] * 3
    identifier = to_json(study_identifier("IMAGE", StudyInstanceUID=study_of(files[0])))
    found = started_later(pacs, pacs.qr.query.find(identifier))
    assert len(found) == 3
    assert outcomes(pacs, "qr", "waited") == 1


def test_with_the_index_stopped_a_query_answers_within_the_bound_and_is_counted(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(index=False, barrier_timeout=0.3)
    files = ct_files(tmp_path / "in", 2)
    assert store(pacs, *files) == [0x0000] * 2
    started = time.monotonic()
    matches, status = find_once(
        pacs, study_identifier("STUDY", StudyInstanceUID=study_of(files[0]))
    )
    assert (matches, status) == ([], 0x0000)  # what the catalog holds: nothing yet
    assert 0.3 <= time.monotonic() - started < 3
    assert outcomes(pacs, "qr", "timeout") == 1
    behind = pacs.registry.get_sample_value("micropacs_read_barrier_behind_offsets")
    assert behind is not None and behind >= 2

    pacs.start_background()
    uids = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    wait_until(lambda: len(pacs.located(uids)) == 2, what="the index caught up")
    matches, status = find_once(
        pacs, study_identifier("STUDY", StudyInstanceUID=study_of(files[0]))
    )
    assert (len(matches), status) == (1, 0x0000)
    assert outcomes(pacs, "qr", "timeout") == 1  # caught up: no wait, no timeout


def test_a_retrieval_waits_for_the_index(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start_pacs(index=False, barrier_timeout=10)
    files = ct_files(tmp_path / "in", 2)
    assert store(pacs, *files) == [0x0000] * 2
    located = started_later(pacs, pacs.qr.retrieve.entity(study_of(files[0])))
    assert len(located) == 2


def test_an_item_scheduled_is_found_by_the_next_worklist_query(start_pacs: StartPacs) -> None:
    pacs = start_pacs(index=False, barrier_timeout=10)
    scheduler = Scheduler(pacs.bus, pacs.worklist, 100, pacs.barrier)
    item: WorklistItem = pacs.loop_call(scheduler.add(scheduled("RB1", station="RB01").dataset))
    query = {"00400100": {"vr": "SQ", "Value": [{"00400001": {"vr": "AE", "Value": ["RB01"]}}]}}
    answers, _ = started_later(pacs, pacs.worklist_app.worklist.find(query))
    assert len(answers) == 1
    assert pacs.loop_call(scheduler.item(item.item_id)) is not None
    assert outcomes(pacs, "worklist", "waited") == 1


def test_with_the_barrier_off_an_n_set_after_its_n_create_is_judged_by_this_process(
    start_pacs: StartPacs,
) -> None:
    pacs = start_pacs(index=False, barrier_timeout=0)
    steps = PerformedSteps(
        pacs.bus, pacs.worklist, WorklistMetrics(CollectorRegistry()), barrier=pacs.barrier
    )
    uid = generate_uid()
    pacs.loop_call(steps.create(uid, to_json(in_progress()), "CT01"))
    updated = pacs.loop_call(steps.update(uid, to_json(completed())))  # the index never ran
    assert updated["00400252"]["Value"] == ["COMPLETED"]


def test_an_n_set_answered_by_another_process_is_judged_against_the_n_create(
    start_pacs: StartPacs,
) -> None:
    pacs = start_pacs(index=False, barrier_timeout=10)
    metrics = WorklistMetrics(CollectorRegistry())
    creating = PerformedSteps(pacs.bus, pacs.worklist, metrics, barrier=pacs.barrier)
    setting = PerformedSteps(pacs.bus, pacs.worklist, metrics, barrier=pacs.barrier)
    uid = generate_uid()
    pacs.loop_call(creating.create(uid, to_json(in_progress()), "CT01"))
    updated = started_later(pacs, setting.update(uid, to_json(completed())))
    assert updated["00400252"]["Value"] == ["COMPLETED"]  # PerformedProcedureStepStatus
