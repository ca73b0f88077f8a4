"""The index applies IOCM rejection notes stored by C-STORE (services/index/rejection.py),
and rejected instances are asked for deletion once due (services/index/rejected.py).

Over the real in-process services: pynetdicom stores the images and the note, the
index consumer applies it from the event's header; a malformed note is stored and
ignored with a log line; the deletion of what is due goes through deletion events the
index applies.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydicom import dcmread

from micropacs.config import IocmSettings
from micropacs.events import DELETIONS
from micropacs.iocm import KEY_OBJECT_SELECTION, normal_time
from services.index.rejected import RejectedDeletion
from tests.iocmdata import rejection_kos, write_kos
from tests.service.conftest import Running, StartPacs, wait_until
from tests.service.peers import ct_files, store


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_stored_note_hides_what_it_rejects(pacs: Running, tmp_path: Path) -> None:
    images = ct_files(tmp_path / "in", 3)
    assert store(pacs, *images) == [0, 0, 0]
    pacs.wait_indexed([uid_of(p) for p in images])
    kos = write_kos(rejection_kos(images[:2], title="113037"), tmp_path / "kos.dcm")
    assert store(pacs, kos, sop_class=KEY_OBJECT_SELECTION) == [0]
    pacs.wait_indexed([uid_of(kos)])
    assert [loc.sop_instance_uid for loc in pacs.located([uid_of(p) for p in images])] == [
        uid_of(images[2])
    ]
    assert pacs.metric("micropacs_index_rejection_notes_total", outcome="applied") == 1
    assert pacs.metric("micropacs_index_rejected_instances_total") == 2
    # The same note again (a modality resending it): nothing more changes.
    assert store(pacs, kos, sop_class=KEY_OBJECT_SELECTION) == [0]
    wait_until(
        lambda: pacs.metric("micropacs_index_rejection_notes_total", outcome="applied") == 2,
        what="the note applied again",
    )
    assert pacs.metric("micropacs_index_rejected_instances_total") == 2
    assert len(pacs.located([uid_of(p) for p in images] + [uid_of(kos)])) == 2


def test_a_malformed_note_is_stored_and_ignored_with_a_log_line(
    pacs: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = ct_files(tmp_path / "in", 2)
    assert store(pacs, *images) == [0, 0]
    note = rejection_kos(images)
    series = note.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    del series.ReferencedSOPSequence
    kos = write_kos(note, tmp_path / "kos.dcm")
    follower = ct_files(tmp_path / "after", 1)[0]
    with caplog.at_level(logging.WARNING, logger="services.index.rejection"):
        assert store(pacs, kos, sop_class=KEY_OBJECT_SELECTION) == [0]
        assert store(pacs, follower) == [0]
        pacs.wait_indexed([uid_of(p) for p in (*images, kos, follower)])
    [line] = [r for r in caplog.records if r.name == "services.index.rejection"]
    assert "rejection note stored but ignored" in line.getMessage()
    assert "no Referenced SOP" in line.getMessage()
    assert uid_of(images[0]) not in line.getMessage()
    assert pacs.metric("micropacs_index_rejection_notes_total", outcome="malformed") == 1
    assert pacs.background_failure() is None


def _deletion(pacs: Running, after: float) -> RejectedDeletion:
    settings = IocmSettings(delete_rejected_after=after, delete_interval=0.05)
    return RejectedDeletion(pacs.bus, pacs.catalog, settings, CollectorRegistry())


def test_rejected_instances_are_asked_for_deletion_once_due(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs()
    images = ct_files(tmp_path / "in", 3)
    kos = write_kos(rejection_kos(images[:2]), tmp_path / "kos.dcm")
    assert store(pacs, kos, sop_class=KEY_OBJECT_SELECTION) == [0]  # the note first
    assert store(pacs, *images) == [0, 0, 0]
    pacs.wait_indexed([uid_of(kos), uid_of(images[2])])
    rejected = pacs.loop_call(pacs.catalog.rejected_instances(normal_time(datetime.now(UTC)), 10))
    assert sorted(r.sop_instance_uid for r in rejected) == sorted(map(uid_of, images[:2]))

    deletion = _deletion(pacs, after=3600)
    assert pacs.loop_call(deletion.delete_due()) == 0  # not due for an hour
    later = datetime.now(UTC) + timedelta(hours=2)
    assert pacs.loop_call(deletion.delete_due(later)) == 2
    wait_until(
        lambda: not pacs.loop_call(pacs.catalog.rejected_instances(normal_time(later), 10)),
        what="the rejected instances deleted",
    )
    events = [r for r in pacs.published(DELETIONS) if b'"instance.deleted"' in r.value]
    assert len(events) == 2 and all(b'"actor":"iocm"' in r.value for r in events)
    assert len(pacs.located([uid_of(kos), uid_of(images[2])])) == 2  # the rest stays
    assert pacs.loop_call(deletion.delete_due(later)) == 0
