"""C-CANCEL (PS3.7 9.3.2.3) of a C-FIND and of a C-GET while they answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import evt

from micropacs.events import INSTANCE_STORED
from tests.service.conftest import Running, wait_until
from tests.service.peers import (
    FIND,
    GET,
    PENDING,
    associate,
    ct_files,
    find,
    responses,
    sop_instance_of,
    store,
    study_identifier,
)

CANCEL = 0xFE00
MATCHES = 3000
"""Studies a C-FIND matches: far more than can be answered before a C-CANCEL arrives."""


def fill_catalog(pacs: Running, template: Path, studies: int) -> None:
    """``studies`` one-instance studies through the real path: events on the log, indexed.

    One object is stored; its event is published again under new UIDs, so the
    catalog fills in a second instead of the minutes as many C-STOREs take.
    """
    assert store(pacs, template) == [0x0000]
    [stored] = pacs.published(INSTANCE_STORED)
    event = json.loads(stored.value)
    events = []
    for number in range(studies - 1):
        uid = f"2.25.{10**30 + number}"
        header = {
            **event["header"],
            "0020000D": {"vr": "UI", "Value": [f"{uid}.1"]},
            "0020000E": {"vr": "UI", "Value": [f"{uid}.2"]},
            "00080018": {"vr": "UI", "Value": [f"{uid}.3"]},
        }
        clone = {
            **event,
            "study_instance_uid": f"{uid}.1",
            "series_instance_uid": f"{uid}.2",
            "sop_instance_uid": f"{uid}.3",
            "header": header,
        }
        events.append((f"{uid}.1", json.dumps(clone).encode()))

    async def publish() -> None:
        await asyncio.gather(*(pacs.bus.publish(INSTANCE_STORED, k, v) for k, v in events))

    pacs.loop_call(publish())

    def indexed() -> bool:
        return pacs.loop_call(pacs.catalog.counts()).studies == studies

    wait_until(indexed, timeout=30, what=f"{studies} studies indexed")


def test_c_find_cancelled_after_its_first_match_ends_with_fe00(
    pacs: Running, tmp_path: Path
) -> None:
    """pynetdicom's DUL reads an incoming PDU only when it has nothing left to send, so
    an SCP that queues its matches faster than they leave reads the C-CANCEL late, or
    after the last match: this holds that the cancel is honoured all the same."""
    [template] = ct_files(tmp_path / "in", 1)
    fill_catalog(pacs, template, MATCHES)
    query = study_identifier(StudyInstanceUID="", PatientID="")
    with associate(pacs, [FIND]) as assoc:
        pending = 0
        final = None
        for status, _ in assoc.send_c_find(query, FIND, msg_id=7):
            assert status is not None and "Status" in status, "C-FIND timed out or aborted"
            if int(status.Status) not in PENDING:
                final = int(status.Status)
                break
            if pending == 0:
                assoc.send_c_cancel(7, query_model=FIND)
            pending += 1

        assert final == CANCEL, f"final status 0x{final:04X} after {pending} matches"
        assert pending < MATCHES
        # The association goes on serving.
        one = study_identifier(StudyInstanceUID=dcmread(template).StudyInstanceUID)
        matches, answer = find(assoc, one)
        assert (len(matches), answer) == (1, 0x0000)


def test_c_get_cancelled_during_its_sub_operations_ends_with_fe00(
    pacs: Running, tmp_path: Path
) -> None:
    files = ct_files(tmp_path / "in", 5)
    assert store(pacs, *files) == [0x0000] * 5
    sent = [dcmread(path, stop_before_pixels=True) for path in files]
    pacs.wait_indexed([ds.SOPInstanceUID for ds in sent])
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(sop_instance_of(event))
        if len(received) == 1:
            # Sent before this sub-operation's response, so read before the next one starts.
            event.assoc.send_c_cancel(9, query_model=GET)
        return 0x0000

    with associate(
        pacs,
        [GET, CTImageStorage],
        scp_roles=[CTImageStorage],
        handlers=[(evt.EVT_C_STORE, on_store)],
    ) as assoc:
        answers = responses(
            assoc.send_c_get(
                study_identifier(StudyInstanceUID=sent[0].StudyInstanceUID), GET, msg_id=9
            )
        )

    final = answers[-1]
    assert int(final.Status) == CANCEL
    assert int(final.NumberOfCompletedSuboperations) == len(received) == 1
    assert received[0] in {ds.SOPInstanceUID for ds in sent}
