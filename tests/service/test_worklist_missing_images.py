"""Procedures completed without images: performed steps in the real embedded worklist store,
images sent by C-STORE and indexed into the real catalog, the check between them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydicom import dcmread
from pydicom.uid import generate_uid

from micropacs.config import QuerySettings, WorklistSettings
from micropacs.dicom.json_model import to_json
from micropacs.ports import PerformedStep
from services.worklist.metrics import WorklistMetrics
from services.worklist.missing_images import MissingImages, step_reference
from tests import dicomdata
from tests.service.conftest import Running, StartPacs, wait_until
from tests.service.peers import ct_files, store
from tests.worklistdata import completed, in_progress

GAUGE = "micropacs_worklist_procedures_without_images"
HOUR = 3600.0


def perform(pacs: Running, series_uid: str, status: str = "COMPLETED", ago: float = 0) -> str:
    """One procedure ended ``ago`` seconds ago in ``status``, naming ``series_uid``, written to
    the worklist store as the index writes an MPPS (N-CREATE's attributes, then N-SET's);
    its SOP Instance UID."""
    uid = generate_uid()
    final = completed(status)
    final.PerformedSeriesSequence[0].SeriesInstanceUID = series_uid
    dataset = to_json(in_progress()) | to_json(final)
    ended = (datetime.now(UTC) - timedelta(seconds=ago)).isoformat()
    pacs.loop_call(pacs.worklist.put_step(PerformedStep(uid, dataset, "CT01", ended, ended)))
    return uid


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def monitor(pacs: Running, clock: Clock, window: float = 7 * 24 * HOUR) -> MissingImages:
    registry = CollectorRegistry()
    settings = WorklistSettings(missing_images_after=HOUR, missing_images_window=window)
    metrics = WorklistMetrics(registry)
    return MissingImages(pacs.worklist, pacs.catalog, settings, QuerySettings(), metrics, clock)


def test_a_procedure_counts_after_the_delay_until_its_images_arrive(
    pacs: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    series = dicomdata.SeriesSpec()
    uid = perform(pacs, series.series_instance_uid)
    clock = Clock()
    check = monitor(pacs, clock)

    assert pacs.loop_call(check.check()) == 0, "counted before missing_images_after"
    clock.now += timedelta(seconds=HOUR + 60)
    with caplog.at_level(logging.WARNING, "services.worklist.missing_images"):
        assert pacs.loop_call(check.check()) == 1
        assert pacs.loop_call(check.check()) == 1
    [line] = [r for r in caplog.records if r.getMessage() == "procedure completed without images"]
    assert getattr(line, "mpps", None) == step_reference(uid)
    assert uid not in str(line.__dict__), "the log names the step by a hash only"

    files = ct_files(tmp_path / "ct", 2, series=series)
    assert store(pacs, *files) == [0, 0]
    pacs.wait_indexed(
        [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    )
    assert pacs.loop_call(check.check()) == 0


def test_only_completed_steps_of_the_window_are_counted(pacs: Running) -> None:
    perform(pacs, generate_uid(), status="DISCONTINUED")
    perform(pacs, generate_uid())
    clock = Clock()
    check = monitor(pacs, clock, window=2 * HOUR)
    clock.now += timedelta(seconds=HOUR + 60)
    assert pacs.loop_call(check.check()) == 1, "the discontinued one is not counted"
    clock.now += timedelta(seconds=2 * HOUR)
    assert pacs.loop_call(check.check()) == 0, "out of the window"


def test_the_service_runs_the_check_and_exports_the_gauge(start_pacs: StartPacs) -> None:
    """The worklist service's background task, with its default delay of an hour: a step
    completed two hours ago is counted, one completed just now is not (yet)."""
    pacs = start_pacs(index=False)
    perform(pacs, generate_uid(), ago=2 * HOUR)
    perform(pacs, generate_uid())
    pacs.start_background()
    wait_until(
        lambda: pacs.metric("micropacs_worklist_missing_images_checked_timestamp_seconds") > 0,
        what="the worklist service checked for procedures without images",
    )
    assert pacs.registry.get_sample_value(GAUGE) == 1
