"""C-GET (PS3.4 C.4.3) of a study larger than one batch of instances opened ahead
(micropacs.dimse.opened_ahead): every instance sent once and in order, and an
instance whose object is gone fails its own sub-operation only (Warning 0xB000
with the Failed SOP Instance UID List, PS3.4 C.4.3.1.3)."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import evt

from micropacs.dimse.opened_ahead import BATCH_COUNT
from tests.service.conftest import Running
from tests.service.peers import (
    GET,
    associate,
    ct_files,
    failed_uids,
    responses,
    sop_instance_of,
    store,
    study_identifier,
)

WARNING_SUBOPS = 0xB000


def get_study(pacs: Running, study: str) -> tuple[list[str], list[int], list[str]]:
    """What a C-GET of ``study`` delivered (SOP Instance UIDs, in order), every response's
    status and the final response's Failed SOP Instance UID List."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(sop_instance_of(event))
        return 0x0000

    with associate(
        pacs,
        [GET, CTImageStorage],
        scp_roles=[CTImageStorage],
        handlers=[(evt.EVT_C_STORE, on_store)],
    ) as assoc:
        answers = responses(assoc.send_c_get(study_identifier(StudyInstanceUID=study), GET))
    assert answers, "no C-GET response"
    final = answers[-1]
    assert int(final.NumberOfCompletedSuboperations) == len(received)
    return received, [int(answer.Status) for answer in answers], failed_uids(final)


def test_c_get_across_batches_sends_each_instance_once_and_fails_only_the_missing(
    pacs: Running, tmp_path: Path
) -> None:
    count = BATCH_COUNT + 8
    files = ct_files(tmp_path / "in", count)
    assert store(pacs, *files) == [0x0000] * count
    uids = [dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files]
    pacs.wait_indexed(uids)
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    planned = pacs.loop_call(pacs.catalog.locate(study_uids=[study]))
    assert len(planned) == count

    received, statuses, _ = get_study(pacs, study)
    assert received == [location.sop_instance_uid for location in planned]
    assert statuses[-1] == 0x0000

    # One object gone from each batch: those two sub-operations fail, no other.
    gone = [planned[3], planned[BATCH_COUNT + 2]]
    for location in gone:
        pacs.loop_call(pacs.blobs.delete(location.object_key))
    received, statuses, failed = get_study(pacs, study)
    assert received == [loc.sop_instance_uid for loc in planned if loc not in gone]
    assert statuses[-1] == WARNING_SUBOPS
    assert sorted(failed) == sorted(location.sop_instance_uid for location in gone)
