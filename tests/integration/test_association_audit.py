"""The audit record of a store association names the studies and patients it stored.

storescu sends two studies on one association to a running ``micropacs serve``; the
``association`` record on the audit topic lists both study UIDs and patient IDs with
the C-STORE count, as the C-STORE handler noted each object it read.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from unittest.mock import patch

from micropacs.adapters.factory import open_event_bus
from micropacs.config import Settings
from micropacs.events import AUDIT, AuditRecorded
from tests import dicomdata
from tests.integration.peers import storescu
from tests.integration.server import Server


def association_record(server: Server, study_uid: str, timeout: float = 30) -> AuditRecorded:
    """The first ``association`` record naming ``study_uid``, waited for (the record is
    sent when the association ends; a new Kafka group is assigned its partitions a
    moment after it joins)."""
    with patch.dict(os.environ, server.env):
        settings = Settings(data_dir=server.data_dir)

    async def read() -> AuditRecorded:
        bus = await open_event_bus(settings.bus_url, settings.kafka)
        consumer = await bus.consumer(AUDIT, f"reader-{uuid.uuid4().hex}")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for record in await consumer.poll(1000, 0.5):
                    event = AuditRecorded.from_bytes(record.value)
                    if event.kind == "association" and study_uid in event.study_uids:
                        return event
            raise AssertionError(f"no association record names the study in {timeout} s")
        finally:
            await consumer.close()
            await bus.close()

    return asyncio.run(read())


def test_a_store_association_record_lists_its_studies(server: Server, tmp_path: Path) -> None:
    first = dicomdata.StudySpec(patient_id="AUD-1")
    second = dicomdata.StudySpec(patient_id="AUD-2")
    files = [
        *dicomdata.make_ct_series(tmp_path / "a", 2, rows=16, cols=16, study=first),
        *dicomdata.make_ct_series(tmp_path / "b", 1, rows=16, cols=16, study=second),
    ]
    # One association: every file is Explicit VR Little Endian.
    assert len(dicomdata.by_transfer_syntax(files)) == 1
    storescu(server, files)
    record = association_record(server, first.study_instance_uid)
    assert set(record.study_uids) == {first.study_instance_uid, second.study_instance_uid}
    assert set(record.patient_ids) == {"AUD-1", "AUD-2"}
    assert record.operations == {"C-STORE": 3}
    assert (record.actor, record.destination) == ("STORESCU", server.ae_title)
    assert (record.outcome, record.detail) == (0, "released")
