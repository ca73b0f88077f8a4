"""The index consumer over the real SQLite event log and catalog: dead letters and retries
(services/index/indexer.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from micropacs.events import DEAD_LETTER, INSTANCE_STORED
from tests.service.conftest import StartPacs, wait_until
from tests.service.outages import sqlite_write_lock
from tests.service.peers import ct_files, store

GROUP = "index"


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def not_json(event: dict[str, Any]) -> bytes:
    return b"\xff\xfe this is no event"


def unknown_version(event: dict[str, Any]) -> bytes:
    return json.dumps({**event, "version": 99}).encode()


def refused_by_the_catalog(event: dict[str, Any]) -> bytes:
    """A well-formed event whose header is no DICOM JSON object: the catalog refuses it."""
    return json.dumps({**event, "sop_instance_uid": generate_uid(), "header": []}).encode()


POISONS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not-json": not_json,
    "unknown-version": unknown_version,
    "refused-by-the-catalog": refused_by_the_catalog,
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_poison_event_goes_to_dead_letters_and_the_next_one_is_indexed(
    start_pacs: StartPacs, tmp_path: Path, poison: str
) -> None:
    pacs = start_pacs(index=False)  # so that one poll hands over all three events
    before, after = ct_files(tmp_path / "in", 2)
    assert store(pacs, before) == [0x0000]
    [good] = pacs.published(INSTANCE_STORED)
    payload = POISONS[poison](json.loads(good.value))
    pacs.loop_call(pacs.bus.publish(INSTANCE_STORED, "poison-key", payload))
    assert store(pacs, after) == [0x0000]
    offsets = [record.offset for record in pacs.published(INSTANCE_STORED)]

    pacs.start_background()
    pacs.wait_indexed([uid_of(before), uid_of(after)])

    [letter] = wait_until(lambda: pacs.published(DEAD_LETTER), what="a dead letter")
    body = json.loads(letter.value)
    assert letter.key == "poison-key"
    assert base64.b64decode(body["payload_base64"]) == payload
    assert (body["source_topic"], body["offset"], body["consumer_group"]) == (
        INSTANCE_STORED,
        offsets[1],
        GROUP,
    )
    assert body["reason"]
    assert pacs.metric("micropacs_index_dead_letters_total") == 1
    assert pacs.metric("micropacs_index_upserts_total") == 2
    pacs.stop_background()
    assert pacs.uncommitted(INSTANCE_STORED, GROUP) == []  # the poison is not delivered again


def test_locked_catalog_is_retried_and_the_event_indexed_once_it_is_free(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(busy_timeout=0.2)
    [path] = ct_files(tmp_path / "in", 1)
    with sqlite_write_lock(pacs.data_dir / "catalog.db"):
        assert store(pacs, path) == [0x0000]
        wait_until(
            lambda: pacs.metric("micropacs_index_retries_total") >= 2,
            what="two retries of the catalog write",
        )
        assert pacs.located([uid_of(path)]) == []

    pacs.wait_indexed([uid_of(path)])
    assert pacs.metric("micropacs_index_retries_total") >= 2
    assert pacs.metric("micropacs_index_upserts_total") == 1
    assert pacs.metric("micropacs_index_dead_letters_total") == 0
    assert pacs.published(DEAD_LETTER) == []
    pacs.stop_background()
    assert pacs.uncommitted(INSTANCE_STORED, GROUP) == []


def test_stopped_while_the_catalog_is_locked_the_batch_is_left_uncommitted_not_dead_lettered(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    """A rolling restart during a catalog outage: the event is delivered again later, and the
    group's offsets do not pass it (a read barrier would answer without it for good)."""
    pacs = start_pacs(busy_timeout=0.2)
    [path] = ct_files(tmp_path / "in", 1)
    with sqlite_write_lock(pacs.data_dir / "catalog.db"):
        assert store(pacs, path) == [0x0000]
        wait_until(lambda: pacs.metric("micropacs_index_retries_total") >= 1, what="a retry")
        pacs.stop_background(timeout=20)
    assert pacs.published(DEAD_LETTER) == []
    assert len(pacs.uncommitted(INSTANCE_STORED, "index")) == 1
    assert pacs.located([uid_of(path)]) == []

    pacs.start_background()  # the next consumer gets it
    wait_until(lambda: pacs.located([uid_of(path)]), what="the event indexed after the restart")
    assert pacs.published(DEAD_LETTER) == []
