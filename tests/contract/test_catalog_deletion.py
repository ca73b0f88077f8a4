"""Catalog contract: removing a study, a series or an instance (Catalog.remove_instances).

The computed attributes (PS3.4 C.3.4) and counts follow; what was received after the
deletion's time stays; removing twice leaves the catalog as once.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from micropacs.dicom import tags
from micropacs.dicom.levels import Level
from micropacs.ports import Catalog, CatalogCounts
from tests.contract.conftest import Runner
from tests.contract.test_catalog import (
    PATIENT_ID,
    STUDY_UID,
    find,
    first,
    instance,
    uid,
)

REQUESTED = "2024-01-16T08:00:00+00:00"
"""A deletion's time, after every test record's receive time (2024-01-15)."""


def _two_studies(catalog: Catalog, run: Runner) -> None:
    run(
        catalog.upsert_instances(
            [
                instance(1, 1, 1),
                instance(1, 1, 2),
                instance(1, 2, 1, modality="MR"),
                instance(2, 1, 1),
            ]
        )
    )


def test_removing_a_study_removes_it_and_its_keys(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    keys = run(catalog.remove_instances(uid(1), received_until=REQUESTED))
    assert sorted(keys) == sorted(
        instance(1, series, number).object_key for series, number in ((1, 1), (1, 2), (2, 1))
    )
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=1)
    assert find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}}) == []
    assert run(catalog.locate(study_uids=[uid(1)])) == []
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: {"vr": "LO"}})
    assert int(first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES)) == 1


def test_removing_again_changes_nothing(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    run(catalog.remove_instances(uid(1), received_until=REQUESTED))
    assert run(catalog.remove_instances(uid(1), received_until=REQUESTED)) == []
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=1)


def test_removing_the_last_study_removes_its_patient(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    run(catalog.remove_instances(uid(1)))
    run(catalog.remove_instances(uid(2)))
    assert run(catalog.counts()) == CatalogCounts(patients=0, studies=0, series=0, instances=0)
    assert find(run, catalog, Level.PATIENT, {PATIENT_ID: {"vr": "LO"}}) == []


def test_removing_a_series_keeps_the_rest_of_its_study(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    keys = run(catalog.remove_instances(uid(1), uid(1, 2), received_until=REQUESTED))
    assert keys == [instance(1, 2, 1).object_key]
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}})
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_SERIES)) == 1
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES)) == 2
    assert study[tags.MODALITIES_IN_STUDY]["Value"] == ["CT"]
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=2, instances=3)


def test_removing_an_instance(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    keys = run(catalog.remove_instances(uid(1), uid(1, 1), uid(1, 1, 2), REQUESTED))
    assert keys == [instance(1, 1, 2).object_key]
    assert [loc.sop_instance_uid for loc in run(catalog.locate(series_uids=[uid(1, 1)]))] == [
        uid(1, 1, 1)
    ]
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}})
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES)) == 2
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=3, instances=3)


def test_an_instance_of_another_study_is_not_removed(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    assert run(catalog.remove_instances(uid(2), uid(1, 1), uid(1, 1, 1))) == []
    assert run(catalog.counts()).instances == 4


def test_a_newer_store_of_the_same_uids_stays(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    newer = replace(instance(1, 1, 2), received_at="2024-01-16T09:00:00+00:00")
    run(catalog.upsert_instances([newer]))
    keys = run(catalog.remove_instances(uid(1), received_until=REQUESTED))
    assert sorted(keys) == sorted([instance(1, 1, 1).object_key, instance(1, 2, 1).object_key])
    (found,) = run(catalog.locate(study_uids=[uid(1)]))
    assert found.sop_instance_uid == uid(1, 1, 2)
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}})
    assert int(first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES)) == 1
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=2, instances=2)


def test_the_same_uids_stored_again_after_removal_are_new(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    run(catalog.remove_instances(uid(1), received_until=REQUESTED))
    run(catalog.upsert_instances([instance(1, 1, 1)]))
    assert [loc.sop_instance_uid for loc in run(catalog.locate(study_uids=[uid(1)]))] == [
        uid(1, 1, 1)
    ]
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=2, instances=2)


def test_removing_an_unknown_study_removes_nothing(catalog: Catalog, run: Runner) -> None:
    _two_studies(catalog, run)
    assert run(catalog.remove_instances(uid(9))) == []
    assert run(catalog.counts()).instances == 4


def test_mongodb_a_removal_cut_short_stays_hidden_until_it_is_finished(
    catalog: Catalog, run: Runner
) -> None:
    """The state a crash leaves mid-removal: the study marked hidden, some of its
    instances deleted, its series still listing them."""
    from micropacs.adapters._mongo_delete import HIDDEN
    from micropacs.adapters.mongo import MongoCatalog

    if not isinstance(catalog, MongoCatalog):
        pytest.skip("MongoDB catalog only")
    _two_studies(catalog, run)
    run(catalog._db.studies.update_one({"_id": uid(1)}, {"$set": {HIDDEN: True}}))
    run(catalog._db.instances.delete_one({"_id": uid(1, 1, 1)}))
    study = {STUDY_UID: {"vr": "UI", "Value": [uid(1)]}}
    assert find(run, catalog, Level.STUDY, study) == []
    assert find(run, catalog, Level.IMAGE, study) == []
    assert run(catalog.locate(study_uids=[uid(1)])) == []

    keys = run(catalog.remove_instances(uid(1), received_until=REQUESTED))
    assert sorted(keys) == sorted([instance(1, 1, 2).object_key, instance(1, 2, 1).object_key])
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=1)
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: {"vr": "LO"}})
    assert int(first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES)) == 1


def test_mongodb_a_study_hidden_when_a_crash_came_after_its_removal_is_shown_again(
    catalog: Catalog, run: Runner
) -> None:
    """A crash after the removal of what a deletion covered, before the study holding a
    newer instance was shown again: the redelivered event shows it."""
    from micropacs.adapters._mongo_delete import HIDDEN
    from micropacs.adapters.mongo import MongoCatalog

    if not isinstance(catalog, MongoCatalog):
        pytest.skip("MongoDB catalog only")
    newer = replace(instance(1, 1, 1), received_at="2024-01-17T00:00:00+00:00")
    run(catalog.upsert_instances([newer]))
    run(catalog._db.studies.update_one({"_id": uid(1)}, {"$set": {HIDDEN: True}}))
    assert run(catalog.locate(study_uids=[uid(1)])) == []
    assert run(catalog.remove_instances(uid(1), received_until=REQUESTED)) == []
    assert [loc.sop_instance_uid for loc in run(catalog.locate(study_uids=[uid(1)]))] == [
        uid(1, 1, 1)
    ]
