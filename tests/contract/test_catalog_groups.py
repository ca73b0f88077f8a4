"""Catalog contract: storage groups for retention and tiering (``Catalog.studies_in_group``,
``stored_instances``, ``move_instances``; docs/lifecycle.md).

A group's studies come least recently received first, page by page; a move switches a
study's instances to their new keys and group at once, leaves alone an instance stored
again since it was read, and is idempotent; locate, the storage groups' figures and a
later store all follow it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from micropacs.errors import InvalidInput
from micropacs.ports import Catalog, InstanceMove, InstanceRecord, StorageUsage, StudyInGroup
from tests.contract.conftest import Runner
from tests.contract.test_catalog import instance


def received(record: InstanceRecord, when: str, group: str = "default") -> InstanceRecord:
    """The record received at ``when`` into ``group``, keyed as ingest keys it."""
    key = (
        f"{group}/{record.study_instance_uid}/{record.series_instance_uid}/"
        f"{record.sop_instance_uid}.dcm"
    )
    return replace(record, received_at=when, storage_group=group, object_key=key)


def archived(record: InstanceRecord) -> str:
    return record.object_key.replace("default/", "archive/", 1)


def moves_to_archive(catalog: Catalog, run: Runner, study_uid: str) -> list[InstanceMove]:
    return [
        InstanceMove(
            sop_instance_uid=stored.sop_instance_uid,
            from_key=stored.object_key,
            received_at=stored.received_at,
            object_key=stored.object_key.replace("default/", "archive/", 1),
            storage_group="archive",
        )
        for stored in run(catalog.stored_instances(study_uid))
    ]


JAN = "2024-01-15T10:20:00+00:00"
FEB = "2024-02-15T10:20:00+00:00"
MAR = "2024-03-15T10:20:00.250000+00:00"


@pytest.fixture
def three_studies(catalog: Catalog, run: Runner) -> list[list[InstanceRecord]]:
    """Study 1 received in February, study 2 in January and March (its newest counts),
    study 3 in January; study 4 in January into another group."""
    studies = [
        [received(instance(1, 1, 1), FEB), received(instance(1, 1, 2), FEB)],
        [received(instance(2, 1, 1), JAN), received(instance(2, 2, 1), MAR)],
        [received(instance(3, 1, 1), JAN)],
        [received(instance(4, 1, 1), JAN, "mr")],
    ]
    run(catalog.upsert_instances([r for study in studies for r in study]))
    return studies


def test_studies_of_a_group_least_recently_received_first(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    uid = [study[0].study_instance_uid for study in three_studies]
    found = run(catalog.studies_in_group("default"))
    assert found == [
        StudyInGroup(uid[2], "default", 1, 1001, JAN),
        StudyInGroup(uid[0], "default", 2, 2003, FEB),
        StudyInGroup(uid[1], "default", 2, 2002, MAR),
    ]
    assert run(catalog.studies_in_group("mr")) == [StudyInGroup(uid[3], "mr", 1, 1001, JAN)]
    assert run(catalog.studies_in_group("archive")) == []
    # Older than: the newest instance decides, and the bound is exclusive.
    assert run(catalog.studies_in_group("default", received_before=MAR)) == found[:2]
    assert run(catalog.studies_in_group("default", received_before=JAN)) == []
    # Page by page, each page after the last of the one before.
    first = run(catalog.studies_in_group("default", limit=2))
    assert first == found[:2]
    after = (first[-1].last_received, first[-1].study_instance_uid)
    assert run(catalog.studies_in_group("default", after=after, limit=2)) == found[2:]
    assert run(catalog.studies_in_group("default", limit=0)) == []
    with pytest.raises(InvalidInput):
        run(catalog.studies_in_group("default", limit=-1))


def test_stored_instances_of_a_study(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    study = three_studies[1]
    stored = run(catalog.stored_instances(study[0].study_instance_uid))
    assert [
        (s.sop_instance_uid, s.series_instance_uid, s.storage_group, s.object_key, s.size)
        for s in stored
    ] == [
        (r.sop_instance_uid, r.series_instance_uid, "default", r.object_key, r.size)
        for r in sorted(study, key=lambda r: (r.series_instance_uid, r.sop_instance_uid))
    ]
    assert {s.received_at for s in stored} == {JAN, MAR}
    assert run(catalog.stored_instances("1.2.3.999")) == []


def test_move_switches_a_study_to_its_new_keys(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    study = three_studies[0]
    study_uid = study[0].study_instance_uid
    moves = moves_to_archive(catalog, run, study_uid)
    assert run(catalog.move_instances(study_uid, moves)) == 2

    located = run(catalog.locate(study_uids=[study_uid]))
    assert sorted(loc.object_key for loc in located) == sorted(archived(r) for r in study)
    assert {s.storage_group for s in run(catalog.stored_instances(study_uid))} == {"archive"}
    assert [s.study_instance_uid for s in run(catalog.studies_in_group("archive"))] == [study_uid]
    assert study_uid not in {s.study_instance_uid for s in run(catalog.studies_in_group("default"))}
    assert StorageUsage("archive", 2, 2003) in run(catalog.storage_usage())
    # The same call again, or an empty one, moves nothing.
    assert run(catalog.move_instances(study_uid, moves)) == 0
    assert run(catalog.move_instances(study_uid, [])) == 0
    # The other studies kept their places.
    other = three_studies[2][0]
    assert [
        loc.object_key for loc in run(catalog.locate(study_uids=[other.study_instance_uid]))
    ] == [other.object_key]


def test_an_instance_stored_again_keeps_its_record(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    study = three_studies[1]
    study_uid = study[0].study_instance_uid
    moves = moves_to_archive(catalog, run, study_uid)
    # After the moves were read, the first instance is stored again (same key, later).
    again = replace(study[0], received_at="2024-04-01T00:00:00+00:00")
    run(catalog.upsert_instances([again]))
    assert run(catalog.move_instances(study_uid, moves)) == 1
    keys = {
        loc.sop_instance_uid: loc.object_key for loc in run(catalog.locate(study_uids=[study_uid]))
    }
    assert keys == {
        again.sop_instance_uid: again.object_key,
        study[1].sop_instance_uid: archived(study[1]),
    }


def test_a_move_touches_only_its_study(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    first, third = three_studies[0], three_studies[2]
    moves = moves_to_archive(catalog, run, third[0].study_instance_uid)
    assert run(catalog.move_instances(first[0].study_instance_uid, moves)) == 0
    located = run(catalog.locate(study_uids=[third[0].study_instance_uid]))
    assert [loc.object_key for loc in located] == [third[0].object_key]
    with pytest.raises(InvalidInput):
        run(catalog.move_instances(first[0].study_instance_uid, [replace(moves[0], object_key="")]))


def test_a_store_after_a_move_takes_its_own_place(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    study = three_studies[2]
    study_uid = study[0].study_instance_uid
    assert run(catalog.move_instances(study_uid, moves_to_archive(catalog, run, study_uid))) == 1
    # The modality sends the instance again: ingest files it in the default group.
    again = replace(study[0], received_at="2024-05-01T00:00:00+00:00")
    run(catalog.upsert_instances([again]))
    located = run(catalog.locate(study_uids=[study_uid]))
    assert [loc.object_key for loc in located] == [again.object_key]
    assert [s.storage_group for s in run(catalog.stored_instances(study_uid))] == ["default"]
    assert run(catalog.studies_in_group("archive")) == []


def test_removing_a_moved_study_returns_its_new_keys(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]]
) -> None:
    study = three_studies[0]
    study_uid = study[0].study_instance_uid
    run(catalog.move_instances(study_uid, moves_to_archive(catalog, run, study_uid)))
    removed = run(catalog.remove_instances(study_uid))
    assert sorted(removed) == sorted(archived(r) for r in study)
    assert run(catalog.studies_in_group("archive")) == []


def test_mongo_a_move_cut_short_shows_all_old_or_all_new_keys(
    catalog: Catalog, run: Runner, three_studies: list[list[InstanceRecord]], backend: str
) -> None:
    """What a crash leaves of a MongoDB move (``_mongo_groups``): the new places written
    beside the old ones, with the study's switch or without it."""
    if backend != "stack":
        pytest.skip("the MongoDB catalog's own steps")
    from micropacs.adapters import _mongo_groups as steps
    from micropacs.adapters.mongo import MongoCatalog

    assert isinstance(catalog, MongoCatalog)
    db = catalog._db
    study = three_studies[0]
    study_uid = study[0].study_instance_uid
    moves = moves_to_archive(catalog, run, study_uid)

    async def mark(move_id: str) -> None:
        for one in moves:
            place = {
                "id": move_id,
                "object_key": one.object_key,
                "storage_group": one.storage_group,
                "from_key": one.from_key,
                "received_at": one.received_at,
            }
            await db.instances.update_one(
                {"_id": one.sop_instance_uid}, {"$set": {steps.MOVE: place}}
            )

    old = sorted(r.object_key for r in study)
    new = sorted(archived(r) for r in study)

    def keys() -> list[str]:
        return sorted(loc.object_key for loc in run(catalog.locate(study_uids=[study_uid])))

    run(mark("first"))  # cut short before the switch: every old key
    assert keys() == old
    run(mark("second"))
    run(db.studies.update_one({"_id": study_uid}, {"$set": {steps.MOVING: "second"}}))
    assert keys() == new  # switched, not yet written into the instances: every new key
    assert {s.storage_group for s in run(catalog.stored_instances(study_uid))} == {"archive"}
    # The next look at any group finishes it.
    assert [s.study_instance_uid for s in run(catalog.studies_in_group("archive"))] == [study_uid]
    assert run(db.studies.find_one({"_id": study_uid}, {steps.MOVING: 1})) == {"_id": study_uid}
    assert keys() == new
    assert run(catalog.move_instances(study_uid, moves)) == 0
