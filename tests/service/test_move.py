"""C-MOVE (PS3.4 C.4.2) to registered destinations that cannot take everything.

Final statuses per PS3.4 C.4.2.1.5: 0xA702 when no sub-operation succeeded,
Warning 0xB000 with the Failed SOP Instance UID List when some failed.
"""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import Dataset, dcmread
from pynetdicom import evt

from micropacs.ports import Node
from tests.service.conftest import Running
from tests.service.peers import (
    MOVE,
    associate,
    ct_files,
    failed_uids,
    responses,
    sop_instance_of,
    storage_scp,
    store,
    study_identifier,
)

OUT_OF_RESOURCES_SUBOPS = 0xA702
WARNING_SUBOPS = 0xB000


def stored_study(pacs: Running, folder: Path, n: int) -> list[Dataset]:
    """A study of ``n`` CT slices, stored and indexed."""
    files = ct_files(folder, n)
    assert store(pacs, *files) == [0x0000] * n
    sent: list[Dataset] = [dcmread(path, stop_before_pixels=True) for path in files]
    pacs.wait_indexed([ds.SOPInstanceUID for ds in sent])
    return sent


def register(pacs: Running, ae_title: str, port: int) -> None:
    pacs.loop_call(pacs.catalog.put_node(Node(ae_title=ae_title, host="127.0.0.1", port=port)))


def move(pacs: Running, study: str, destination: str, timeout: float = 10.0) -> list[Dataset]:
    """C-MOVE of a study; every response, waiting at most ``timeout`` seconds for each."""
    with associate(pacs, [MOVE], timeout=timeout) as assoc:
        return responses(
            assoc.send_c_move(study_identifier(StudyInstanceUID=study), destination, MOVE)
        )


@contextmanager
def port_nobody_listens_on() -> Iterator[int]:
    """A port bound (so no one else takes it) but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_move_to_an_unreachable_destination_fails_every_sub_operation(
    pacs: Running, tmp_path: Path
) -> None:
    sent = stored_study(pacs, tmp_path / "in", 2)
    with port_nobody_listens_on() as port:
        register(pacs, "NOWHERE", port)
        final = move(pacs, sent[0].StudyInstanceUID, "NOWHERE")[-1]
    assert int(final.Status) == OUT_OF_RESOURCES_SUBOPS
    assert int(final.NumberOfFailedSuboperations) == 2
    assert int(final.get("NumberOfCompletedSuboperations", 0)) == 0


def test_move_to_an_unreachable_destination_leaks_no_socket(pacs: Running, tmp_path: Path) -> None:
    sent = stored_study(pacs, tmp_path / "in", 1)
    with port_nobody_listens_on() as port, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        register(pacs, "NOWHERE", port)
        final = move(pacs, sent[0].StudyInstanceUID, "NOWHERE")[-1]
        gc.collect()
    assert int(final.Status) == OUT_OF_RESOURCES_SUBOPS
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_move_to_a_destination_refusing_some_reports_them_failed(
    pacs: Running, tmp_path: Path
) -> None:
    sent = stored_study(pacs, tmp_path / "in", 3)
    refused = str(sent[1].SOPInstanceUID)
    accepted: list[str] = []

    def on_store(event: evt.Event) -> int:
        uid = sop_instance_of(event)
        if uid == refused:
            return 0xA700  # Out of Resources
        accepted.append(uid)
        return 0x0000

    with storage_scp(on_store) as port:
        register(pacs, "PICKY", port)
        final = move(pacs, sent[0].StudyInstanceUID, "PICKY")[-1]

    assert int(final.Status) == WARNING_SUBOPS
    assert int(final.NumberOfCompletedSuboperations) == 2
    assert int(final.NumberOfFailedSuboperations) == 1
    assert failed_uids(final) == [refused]
    assert sorted(accepted) == sorted(str(ds.SOPInstanceUID) for ds in sent if ds is not sent[1])


def test_move_to_a_destination_that_stops_part_way_still_gets_a_final_answer(
    pacs: Running, tmp_path: Path
) -> None:
    sent = stored_study(pacs, tmp_path / "in", 3)
    accepted: list[str] = []

    def on_store(event: evt.Event) -> int:
        if accepted:
            event.assoc.abort()  # the destination goes away after one instance
            return 0xA700
        accepted.append(sop_instance_of(event))
        return 0x0000

    with storage_scp(on_store) as port:
        register(pacs, "FLAKY", port)
        # An answer comes at once or never: no need to wait ten seconds for it.
        final = move(pacs, sent[0].StudyInstanceUID, "FLAKY", timeout=3.0)[-1]

    assert int(final.Status) == WARNING_SUBOPS
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert int(final.NumberOfFailedSuboperations) == 2
    assert sorted(failed_uids(final)) == sorted(
        str(ds.SOPInstanceUID) for ds in sent if str(ds.SOPInstanceUID) not in accepted
    )
