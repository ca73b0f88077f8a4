"""Each service's build() answers its basic operations in-process: a fast smoke test."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import evt

from tests.service.conftest import Running
from tests.service.peers import (
    GET,
    associate,
    ct_files,
    dataset_body,
    echo,
    find_once,
    responses,
    sop_instance_of,
    store,
    stow,
    study_identifier,
)


def test_ingest_answers_c_echo(pacs: Running) -> None:
    assert echo(pacs) == 0x0000


def test_stored_instances_are_indexed_and_found_with_c_find(pacs: Running, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "in", 3)
    assert store(pacs, *files) == [0x0000] * 3
    sent = [dcmread(path, stop_before_pixels=True) for path in files]
    pacs.wait_indexed([ds.SOPInstanceUID for ds in sent])

    identifier = study_identifier(
        "IMAGE", StudyInstanceUID=sent[0].StudyInstanceUID, SOPInstanceUID=""
    )
    matches, status = find_once(pacs, identifier)
    assert status == 0x0000
    assert sorted(m.SOPInstanceUID for m in matches) == sorted(ds.SOPInstanceUID for ds in sent)
    assert pacs.metric("micropacs_index_upserts_total") == 3


def test_c_get_returns_the_stored_bytes(pacs: Running, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "in", 2)
    assert store(pacs, *files) == [0x0000] * 2
    sent = {str(dcmread(path).SOPInstanceUID): dataset_body(path) for path in files}
    [study] = {dcmread(path).StudyInstanceUID for path in files}
    pacs.wait_indexed(list(sent))
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        # Received in chunks to a file (micropacs turns that on process-wide).
        received[sop_instance_of(event)] = dataset_body(event.dataset_path)
        return 0x0000

    with associate(
        pacs,
        [GET, CTImageStorage],
        scp_roles=[CTImageStorage],
        handlers=[(evt.EVT_C_STORE, on_store)],
    ) as assoc:
        final = responses(assoc.send_c_get(study_identifier(StudyInstanceUID=study), GET))[-1]

    assert int(final.Status) == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 2
    assert received == sent


def test_stow_rs_stores_and_the_index_finds_it(pacs: Running, tmp_path: Path) -> None:
    [path] = ct_files(tmp_path / "in", 1)
    ds = dcmread(path, stop_before_pixels=True)
    answer = stow(pacs, [path], study=ds.StudyInstanceUID)
    assert answer.status_code == 200, answer.text
    pacs.wait_indexed([ds.SOPInstanceUID])
    assert pacs.leftovers() == []


def test_every_service_is_ready(pacs: Running) -> None:
    async def readyz() -> httpx.Response:
        transport = httpx.ASGITransport(app=pacs.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://micropacs") as client:
            return await client.get("/readyz")

    answer = pacs.loop_call(readyz())
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["checked"]) == {"blob_store", "event_bus", "catalog", "worklist"}
