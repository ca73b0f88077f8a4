"""Catalog contract: instances rejected by an IOCM rejection note (Catalog.reject_instances).

A rejected instance is hidden from every query level, locate and the counts, the
computed attributes follow and emptied entities disappear; the note itself stays. A
rejection recorded before its instance arrives hides it on arrival. Rejecting twice is
rejecting once. Held rejected instances are listed for their deletion until
remove_instances removes them; their rejection stays.
"""

from __future__ import annotations

from micropacs.dicom import tags
from micropacs.dicom.levels import Level
from micropacs.iocm import KEY_OBJECT_SELECTION
from micropacs.ports import Catalog, CatalogCounts, Rejection
from tests.contract.conftest import Runner
from tests.contract.test_catalog import (
    PATIENT_ID,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    find,
    first,
    instance,
    uid,
    uids,
)

EARLY = "2024-01-15T11:00:00.000000+00:00"
LATE = "2024-01-15T12:00:00.000000+00:00"
NOTE = uid(1, 9, 1)
"""The rejection note's SOP Instance UID: a KOS in series 9 of study 1."""


def rejection(study: int, series: int, number: int, at: str = EARLY) -> Rejection:
    """The rejection of instance (study, series, number) by the note, received ``at``."""
    return Rejection(
        sop_instance_uid=uid(study, series, number),
        series_instance_uid=uid(study, series),
        study_instance_uid=uid(study),
        note_uid=NOTE,
        reason="113001",
        rejected_at=at,
    )


def _study_one(catalog: Catalog, run: Runner) -> None:
    """Study 1: series 1 of three CT images, series 2 of one MR image, series 9 the note."""
    run(
        catalog.upsert_instances(
            [
                instance(1, 1, 1),
                instance(1, 1, 2),
                instance(1, 1, 3),
                instance(1, 2, 1, modality="MR"),
                instance(1, 9, 1, modality="KO", sop_class=KEY_OBJECT_SELECTION),
                instance(2, 1, 1),
            ]
        )
    )


def _sops(run: Runner, catalog: Catalog, study: int) -> list[str]:
    found = find(run, catalog, Level.IMAGE, {STUDY_UID: {"vr": "UI", "Value": [uid(study)]}})
    return uids(found, SOP_UID)


def test_rejected_instances_are_hidden_at_every_level(catalog: Catalog, run: Runner) -> None:
    _study_one(catalog, run)
    hidden = run(
        catalog.reject_instances([rejection(1, 1, 2), rejection(1, 2, 1), rejection(3, 1, 1)])
    )
    assert hidden == 2  # the third is not held (yet)
    assert _sops(run, catalog, 1) == sorted([uid(1, 1, 1), uid(1, 1, 3), NOTE])
    series = find(run, catalog, Level.SERIES, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}})
    assert uids(series, SERIES_UID) == [uid(1, 1), uid(1, 9)]  # the MR series is gone
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}})
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_SERIES)) == 2
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES)) == 3
    assert sorted(study[tags.MODALITIES_IN_STUDY]["Value"]) == ["CT", "KO"]
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: {"vr": "LO"}})
    assert int(first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES)) == 4
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=3, instances=4)
    located = run(catalog.locate(study_uids=[uid(1)]))
    assert sorted(loc.sop_instance_uid for loc in located) == sorted(
        [uid(1, 1, 1), uid(1, 1, 3), NOTE]
    )
    assert run(catalog.locate(sop_instance_uids=[uid(1, 1, 2)])) == []
    direct = {SOP_UID: {"vr": "UI", "Value": [uid(1, 1, 2)]}}
    assert find(run, catalog, Level.IMAGE, direct) == []


def test_a_study_wholly_rejected_disappears(catalog: Catalog, run: Runner) -> None:
    _study_one(catalog, run)
    run(catalog.reject_instances([rejection(2, 1, 1)]))
    assert find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(2)]}}) == []
    assert run(catalog.locate(study_uids=[uid(2)])) == []
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=3, instances=5)


def test_an_instance_rejected_before_it_arrives_stays_hidden(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.reject_instances([rejection(3, 1, 1), rejection(3, 1, 2)])) == 0
    run(catalog.upsert_instances([instance(3, 1, 1), instance(3, 1, 2), instance(3, 1, 3)]))
    assert _sops(run, catalog, 3) == [uid(3, 1, 3)]
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(3)]}})
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES)) == 1
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=1)
    # Only rejected instances: no study appears at all.
    run(catalog.reject_instances([rejection(4, 1, 1)]))
    run(catalog.upsert_instances([instance(4, 1, 1)]))
    assert find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(4)]}}) == []
    held = run(catalog.rejected_instances(LATE, 10))
    assert sorted(r.sop_instance_uid for r in held) == [uid(3, 1, 1), uid(3, 1, 2), uid(4, 1, 1)]


def test_rejecting_twice_is_rejecting_once(catalog: Catalog, run: Runner) -> None:
    _study_one(catalog, run)
    note = [rejection(1, 1, 1), rejection(1, 1, 2)]
    assert run(catalog.reject_instances(note)) == 2
    once = (run(catalog.counts()), find(run, catalog, Level.SERIES, {}))
    assert run(catalog.reject_instances(note)) == 0
    later = [rejection(1, 1, 1, at=LATE)]
    assert run(catalog.reject_instances(later)) == 0
    run(catalog.upsert_instances([instance(1, 1, 1)]))  # the instance sent again
    assert (run(catalog.counts()), find(run, catalog, Level.SERIES, {})) == once
    held = run(catalog.rejected_instances(LATE, 10))
    assert [(r.sop_instance_uid, r.rejected_at) for r in held] == [
        (uid(1, 1, 1), EARLY),
        (uid(1, 1, 2), EARLY),
    ]  # the first rejection is the one kept


def test_rejected_instances_are_listed_oldest_first(catalog: Catalog, run: Runner) -> None:
    _study_one(catalog, run)
    run(catalog.reject_instances([rejection(1, 1, 3, at=LATE), rejection(1, 1, 1)]))
    run(catalog.reject_instances([rejection(9, 1, 1)]))  # never held: not listed
    held = run(catalog.rejected_instances(LATE, 10))
    assert [r.sop_instance_uid for r in held] == [uid(1, 1, 1), uid(1, 1, 3)]
    assert held[0].object_key == instance(1, 1, 1).object_key
    assert (held[0].series_instance_uid, held[0].study_instance_uid) == (uid(1, 1), uid(1))
    assert held[0].reason == "113001"
    assert [r.sop_instance_uid for r in run(catalog.rejected_instances(EARLY, 10))] == [
        uid(1, 1, 1)
    ]
    assert len(run(catalog.rejected_instances(LATE, 1))) == 1
    assert run(catalog.rejected_instances("2024-01-15T10:00:00.000000+00:00", 10)) == []


def test_removal_takes_the_rejected_instances_and_keeps_their_rejection(
    catalog: Catalog, run: Runner
) -> None:
    _study_one(catalog, run)
    run(catalog.reject_instances([rejection(1, 1, 1), rejection(1, 2, 1)]))
    located = run(catalog.locate_rejected(sop_instance_uids=[uid(1, 1, 1)]))
    assert [(loc.sop_instance_uid, loc.object_key) for loc in located] == [
        (uid(1, 1, 1), instance(1, 1, 1).object_key)
    ]
    in_study = run(catalog.locate_rejected(study_uids=[uid(1)]))
    assert sorted(loc.sop_instance_uid for loc in in_study) == [uid(1, 1, 1), uid(1, 2, 1)]
    assert run(catalog.locate_rejected(series_uids=[uid(1, 2)]))[0].sop_class_uid == (
        instance(1, 2, 1).sop_class_uid
    )
    keys = run(catalog.remove_instances(uid(1), uid(1, 1), uid(1, 1, 1), LATE))
    assert keys == [instance(1, 1, 1).object_key]
    assert run(catalog.locate_rejected(study_uids=[uid(1)]))[0].sop_instance_uid == uid(1, 2, 1)
    assert [r.sop_instance_uid for r in run(catalog.rejected_instances(LATE, 10))] == [uid(1, 2, 1)]
    # Its rejection stays: sent again, it is hidden again (and listed again).
    run(catalog.upsert_instances([instance(1, 1, 1)]))
    assert uid(1, 1, 1) not in _sops(run, catalog, 1)
    assert len(run(catalog.rejected_instances(LATE, 10))) == 2
    # A study's removal takes its rejected instances along.
    keys = run(catalog.remove_instances(uid(1), received_until=LATE))
    assert sorted(keys) == sorted(
        instance(1, *at).object_key for at in ((1, 1), (1, 2), (1, 3), (2, 1), (9, 1))
    )
    assert run(catalog.rejected_instances(LATE, 10)) == []
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=1)


def test_sqlite_migrates_a_version_7_catalog_to_hold_rejections(
    catalog_url: str, run: Runner
) -> None:
    import sqlite3
    from contextlib import closing

    from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
    from micropacs.adapters.factory import open_catalog

    path = catalog_url.removeprefix("sqlite://")
    old = run(open_catalog(catalog_url))
    run(old.upsert_instances([instance(1, 1, 1), instance(1, 1, 2)]))
    run(old.close())
    with closing(sqlite3.connect(path)) as conn:  # as a catalog of version 7 was
        conn.execute("DROP TABLE rejections")
        conn.execute("PRAGMA user_version = 7")
        conn.commit()

    migrated = run(open_catalog(catalog_url))
    assert run(migrated.reject_instances([rejection(1, 1, 1)])) == 1
    assert run(migrated.counts()).instances == 1
    run(migrated.close())
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(rejections)")}
    assert {"rejections_held", "rejections_study"} <= indexes
