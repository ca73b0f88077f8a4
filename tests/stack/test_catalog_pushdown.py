"""The MongoDB catalog's queries on FerretDB over PostgreSQL are served by indexes.

A stack of the test's own with FerretDB on PostgreSQL: the catalog is loaded
through its write path, then the server's ``explain`` of each query a C-FIND
with the usual keys runs must show the filter handed down to PostgreSQL and a
PostgreSQL index scan answering it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from micropacs.adapters.mongo import MongoCatalog
from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element, to_json
from micropacs.dicom.levels import Level
from micropacs.ports import InstanceRecord, Query
from stack import servers
from tests import dicomdata
from tests.integration.peers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def postgresql_stack(tmp_path: Path) -> Iterator[servers.Stack]:
    reason = servers.available("postgresql")
    if reason:
        pytest.skip(reason)
    running = servers.up(
        tmp_path / "stack", servers.Ports.picked_by(free_port), backend="postgresql"
    )
    yield running
    servers.down(running.run_dir)


def _records(count: int) -> list[InstanceRecord]:
    now = datetime.now(UTC).isoformat()
    found = []
    for i in range(count):
        ds = dicomdata.synthetic_header(i, instances_per_series=10)
        found.append(
            InstanceRecord(
                sop_class_uid=ds.SOPClassUID,
                sop_instance_uid=ds.SOPInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                study_instance_uid=ds.StudyInstanceUID,
                patient_id=ds.PatientID,
                issuer_of_patient_id="SYNTH",
                object_key=f"x/{i}.dcm",
                size=0,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                storage_group="default",
                received_at=now,
                header=to_json(ds),
            )
        )
    return found


def _plan_nodes(plan: Any) -> list[str]:
    nodes: list[str] = []
    if isinstance(plan, dict):
        if "Node Type" in plan:
            nodes.append(f"{plan['Node Type']} {plan.get('Index Name', '')}".strip())
        for value in plan.values():
            nodes += _plan_nodes(value)
    elif isinstance(plan, list):
        for value in plan:
            nodes += _plan_nodes(value)
    return nodes


def test_cfind_keys_are_pushed_down_and_served_by_an_index(
    postgresql_stack: servers.Stack,
) -> None:
    first = dicomdata.synthetic_header(0, instances_per_series=10)
    day = first.StudyDate
    cases: dict[str, tuple[Level, DicomJson]] = {
        "PatientID": (Level.STUDY, {tags.PATIENT_ID: element("LO", first.PatientID)}),
        "PatientName prefix": (
            Level.STUDY,
            {tags.PATIENT_NAME: element("PN", str(first.PatientName)[:4] + "*")},
        ),
        "StudyDate": (Level.STUDY, {tags.STUDY_DATE: element("DA", day)}),
        "StudyDate within a month": (
            Level.STUDY,
            {tags.STUDY_DATE: element("DA", f"{day[:6]}01-{day[:6]}28")},
        ),
        "AccessionNumber": (
            Level.STUDY,
            {tags.ACCESSION_NUMBER: element("SH", first.AccessionNumber)},
        ),
    }

    async def scenario() -> dict[str, Any]:
        catalog = MongoCatalog(postgresql_stack.env["MICROPACS_STORAGE__CATALOG_URL"])
        await catalog.open()
        try:
            records = _records(4000)
            for start in range(0, len(records), 1000):
                await catalog.upsert_instances(records[start : start + 1000])
            plans = {
                name: await catalog.explain(Query(level=level, identifier=identifier))
                for name, (level, identifier) in cases.items()
            }
            plans["by _id"] = await catalog._db.command(
                "explain", {"find": "instances", "filter": {"_id": first.SOPInstanceUID}}
            )
            named = Query(
                level=Level.IMAGE,
                identifier={tags.SERIES_INSTANCE_UID: element("UI", first.SeriesInstanceUID)},
            )
            plans["series' instances"] = await catalog.explain(named)
            return plans
        finally:
            await catalog.close()

    plans = asyncio.run(scenario())
    assert plans.pop("series' instances") == {"by_hierarchy": True}
    for name, plan in plans.items():
        nodes = _plan_nodes(plan["queryPlanner"])
        assert plan["filterPushdown"] is True, name
        assert any(node.startswith("Bitmap Index Scan") for node in nodes), (name, nodes)
