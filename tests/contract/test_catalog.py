"""Catalog contract: what every catalog adapter must do (micropacs.ports.Catalog).

Headers are DICOM JSON (PS3.18 F.2); queries follow PS3.4 C.2.2.2. Each
query test uses an indexed key (which an adapter may pre-filter on) and a key
found only in the stored JSON, so both paths are exercised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest
from pydicom.datadict import tag_for_keyword

from micropacs.dicom import matching, tags
from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.levels import Level
from micropacs.errors import InvalidInput, QueryTooBroad
from micropacs.ports import Catalog, CatalogCounts, Credential, InstanceRecord, Node, Query
from tests.contract.conftest import Runner

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
ROOT = "1.2.826.0.1.3680043.10.543"

PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ETHNIC_GROUP = "00102160"  # patient level, not indexed
STUDY_UID = "0020000D"
STUDY_DATE = "00080020"
ACCESSION = "00080050"
STUDY_DESCRIPTION = "00081030"
READING_PHYSICIAN = "00081060"  # study level, not indexed
PATIENT_AGE = "00101010"  # study level (Patient Study module), not indexed
PROCEDURE_CODE = "00081032"
SERIES_UID = "0020000E"
MODALITY = "00080060"
SERIES_DESCRIPTION = "0008103E"
SERIES_DATE = "00080021"
PATIENT_POSITION = "00185100"  # series level, not indexed
PPS_START_DATE = "00400244"  # series level, not indexed
SOP_UID = "00080018"
SOP_CLASS = "00080016"
CONTENT_DATE = "00080023"  # image level, not indexed
IMAGE_TYPE = "00080008"
ACQUISITION_NUMBER = "00200012"


def el(vr: str, *values: Any) -> DicomJson:
    """A DICOM JSON element; empty strings mean no value."""
    kept = [value for value in values if value != ""]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def pn(*names: str) -> DicomJson:
    return {"vr": "PN", "Value": [{"Alphabetic": name} for name in names]}


def uid(*parts: int) -> str:
    return ".".join([ROOT, *map(str, parts)])


def instance(
    study: int,
    series: int,
    number: int,
    *,
    patient_id: str = "PAT1",
    issuer: str = "",
    name: str = "Doe^John",
    modality: str = "CT",
    sop_class: str = CT_IMAGE,
    study_date: str = "20240115",
    accession: str = "ACC1",
    study_description: str = "CT Chest",
    series_description: str = "Axial 5mm",
    **extra: DicomJson,
) -> InstanceRecord:
    """An instance record whose UIDs derive from (study, series, number)."""
    study_uid, series_uid, sop_uid = uid(study), uid(study, series), uid(study, series, number)
    header: DicomJson = {
        SOP_CLASS: el("UI", sop_class),
        SOP_UID: el("UI", sop_uid),
        STUDY_DATE: el("DA", study_date),
        "00080030": el("TM", "101500"),
        ACCESSION: el("SH", accession),
        MODALITY: el("CS", modality),
        STUDY_DESCRIPTION: el("LO", study_description),
        SERIES_DESCRIPTION: el("LO", series_description),
        PATIENT_NAME: pn(name),
        PATIENT_ID: el("LO", patient_id),
        "00100030": el("DA", "19700101"),
        "00100040": el("CS", "M"),
        STUDY_UID: el("UI", study_uid),
        SERIES_UID: el("UI", series_uid),
        "00200010": el("SH", f"S{study}"),
        "00200011": el("IS", series),
        "00200013": el("IS", number),
    }
    if issuer:
        header["00100021"] = el("LO", issuer)
    header.update({f"{tag_for_keyword(key):08X}": value for key, value in extra.items()})
    return InstanceRecord(
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        patient_id=patient_id,
        issuer_of_patient_id=issuer,
        object_key=f"default/{study_uid}/{series_uid}/{sop_uid}.dcm",
        size=1000 + number,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_group="default",
        received_at="2024-01-15T10:20:00+00:00",
        header=header,
    )


async def _query(catalog: Catalog, query: Query) -> list[DicomJson]:
    return [found async for found in catalog.query(query)]


def find(
    run: Runner, catalog: Catalog, level: Level, identifier: DicomJson, **options: Any
) -> list[DicomJson]:
    return run(_query(catalog, Query(level=level, identifier=identifier, **options)))


def first(found: DicomJson, tag: str) -> Any:
    values = found.get(tag, {}).get("Value", [])
    return values[0] if values else None


def all_of(found: DicomJson, tag: str) -> list[Any]:
    return list(found.get(tag, {}).get("Value", []))


def uids(results: Iterable[DicomJson], tag: str) -> list[str]:
    return sorted(first(found, tag) for found in results)


UNIQUE = {Level.PATIENT: PATIENT_ID, Level.STUDY: STUDY_UID, Level.SERIES: SERIES_UID}
UNIQUE[Level.IMAGE] = SOP_UID


def test_upsert_is_idempotent(catalog: Catalog, run: Runner) -> None:
    batch = [instance(1, 1, n) for n in range(1, 4)] + [instance(1, 2, 1, modality="PR")]

    run(catalog.upsert_instances(batch))
    once = (run(catalog.counts()), find(run, catalog, Level.STUDY, {}))
    run(catalog.upsert_instances(batch))
    run(catalog.upsert_instances(batch[1:2] + batch[:1]))
    twice = (run(catalog.counts()), find(run, catalog, Level.STUDY, {}))

    assert once[0] == CatalogCounts(patients=1, studies=1, series=2, instances=4)
    assert twice == once
    assert first(twice[1][0], tags.NUMBER_OF_STUDY_RELATED_INSTANCES) == 4


def test_same_instance_twice_in_one_batch_counts_once(catalog: Catalog, run: Runner) -> None:
    record = instance(1, 1, 1)

    run(catalog.upsert_instances([record, record, instance(1, 1, 2), record]))

    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=2)
    (series,) = find(run, catalog, Level.SERIES, {})
    assert first(series, tags.NUMBER_OF_SERIES_RELATED_INSTANCES) == 2


def test_computed_attributes(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, n) for n in range(1, 4)]))
    run(
        catalog.upsert_instances([instance(1, 2, n, modality="PR", sop_class=GSPS) for n in (1, 2)])
    )
    run(catalog.upsert_instances([instance(2, 1, 1, modality="MR", sop_class=MR_IMAGE)]))

    studies = {first(s, STUDY_UID): s for s in find(run, catalog, Level.STUDY, {})}
    study = studies[uid(1)]
    assert first(study, tags.NUMBER_OF_STUDY_RELATED_SERIES) == 2
    assert first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES) == 5
    assert sorted(all_of(study, tags.MODALITIES_IN_STUDY)) == ["CT", "PR"]
    assert sorted(all_of(study, tags.SOP_CLASSES_IN_STUDY)) == sorted([CT_IMAGE, GSPS])
    assert all_of(studies[uid(2)], tags.MODALITIES_IN_STUDY) == ["MR"]

    series = {first(s, SERIES_UID): s for s in find(run, catalog, Level.SERIES, {})}
    assert first(series[uid(1, 1)], tags.NUMBER_OF_SERIES_RELATED_INSTANCES) == 3
    assert first(series[uid(1, 2)], tags.NUMBER_OF_SERIES_RELATED_INSTANCES) == 2
    assert first(series[uid(1, 2)], STUDY_UID) == uid(1)

    (patient,) = find(run, catalog, Level.PATIENT, {})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 2
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_SERIES) == 3
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 6
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=3, instances=6)


def test_latest_upper_level_attributes_win(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, 1, name="Doe^Jon", study_description="old")]))
    run(catalog.upsert_instances([instance(1, 1, 2, name="Doe^John", study_description="new")]))

    (study,) = find(run, catalog, Level.STUDY, {})
    assert first(study, PATIENT_NAME) == {"Alphabetic": "Doe^John"}
    assert first(study, STUDY_DESCRIPTION) == "new"
    assert find(run, catalog, Level.STUDY, {PATIENT_NAME: pn("Doe^Jon")}) == []


def test_a_corrected_patient_id_moves_the_study(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, n, patient_id="WRONG") for n in (1, 2)]))
    run(catalog.upsert_instances([instance(2, 1, 1, patient_id="RIGHT")]))
    run(catalog.upsert_instances([instance(1, 1, n, patient_id="RIGHT") for n in (1, 2)]))

    patients = find(run, catalog, Level.PATIENT, {})
    assert [first(p, PATIENT_ID) for p in patients] == ["RIGHT"]
    assert first(patients[0], tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 2
    assert first(patients[0], tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 3
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=2, series=2, instances=3)


def test_patient_identity_includes_the_issuer(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, 1, patient_id="123", issuer="HOSP_A")]))
    run(catalog.upsert_instances([instance(2, 1, 1, patient_id="123", issuer="HOSP_B")]))

    patients = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "123")})

    assert len(patients) == 2
    assert sorted(first(p, "00100021") for p in patients) == ["HOSP_A", "HOSP_B"]


def test_results_hold_the_attributes_of_their_level_and_above(
    catalog: Catalog, run: Runner
) -> None:
    record = instance(1, 1, 1, ContentDate=el("DA", "20240115"))
    run(catalog.upsert_instances([record]))

    (patient,) = find(run, catalog, Level.PATIENT, {})
    (study,) = find(run, catalog, Level.STUDY, {})
    (series,) = find(run, catalog, Level.SERIES, {})
    (image,) = find(run, catalog, Level.IMAGE, {})

    assert first(patient, PATIENT_NAME) == {"Alphabetic": "Doe^John"}
    assert STUDY_DESCRIPTION not in patient
    assert first(study, PATIENT_NAME) == {"Alphabetic": "Doe^John"}
    assert first(study, STUDY_DESCRIPTION) == "CT Chest"
    assert SERIES_DESCRIPTION not in study and CONTENT_DATE not in study
    assert first(series, STUDY_UID) == uid(1)
    assert first(series, SERIES_DESCRIPTION) == "Axial 5mm"
    assert CONTENT_DATE not in series and SOP_UID not in series
    for tag in (PATIENT_NAME, STUDY_DESCRIPTION, SERIES_DESCRIPTION, STUDY_UID, SERIES_UID):
        assert image[tag] == record.header[tag]
    assert first(image, SOP_UID) == record.sop_instance_uid
    assert first(image, SOP_CLASS) == CT_IMAGE
    assert first(image, CONTENT_DATE) == "20240115"


# -- queries ----------------------------------------------------------------------------------


@pytest.fixture
def archive(catalog: Catalog, run: Runner) -> Catalog:
    """Three patients, four studies, varied enough for every kind of matching key."""
    records = [
        instance(
            1,
            1,
            n,
            patient_id="PAT1",
            name="Doe^John",
            study_date="20240115",
            accession="ACC1",
            study_description="CT Chest",
            EthnicGroup=el("SH", "Nordic"),
            PatientAge=el("AS", "054Y"),
            NameOfPhysiciansReadingStudy=pn("House^Gregory"),
            ProcedureCodeSequence=el(
                "SQ", {"00080100": el("SH", "CTCH"), "00080102": el("SH", "L")}
            ),
            PatientPosition=el("CS", "HFS"),
            PerformedProcedureStepStartDate=el("DA", "20240115"),
            ContentDate=el("DA", "20240115"),
            ImageType=el("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
            AcquisitionNumber=el("IS", n),
            FrameOfReferenceUID=el("UI", uid(900, 1)),
        )
        for n in (1, 2, 3)
    ]
    records.append(
        instance(
            1,
            2,
            1,
            patient_id="PAT1",
            name="Doe^John",
            study_date="20240115",
            accession="ACC1",
            study_description="CT Chest",
            modality="PR",
            sop_class=GSPS,
            series_description="Key images",
            EthnicGroup=el("SH", "Nordic"),
            PatientAge=el("AS", "054Y"),
            NameOfPhysiciansReadingStudy=pn("House^Gregory"),
            PatientPosition=el("CS", "FFS"),
            ContentDate=el("DA", "20240116"),
        )
    )
    records += [
        instance(
            2,
            1,
            n,
            patient_id="PAT1",
            name="Doe^John",
            study_date="20230301",
            accession="ACC2",
            study_description="MR Knee",
            modality="MR",
            sop_class=MR_IMAGE,
            series_description="Sag PD",
            EthnicGroup=el("SH", "Nordic"),
            PatientAge=el("AS", "053Y"),
            NameOfPhysiciansReadingStudy=pn("Wilson^James"),
            PatientPosition=el("CS", "FFS"),
            PerformedProcedureStepStartDate=el("DA", "20230301"),
            ContentDate=el("DA", "20230301"),
            ImageType=el("CS", "ORIGINAL", "PRIMARY", "OTHER"),
            AcquisitionNumber=el("IS", 7),
        )
        for n in (1, 2)
    ]
    records += [
        instance(
            3,
            1,
            1,
            patient_id="PAT2",
            name="Dvořák^Antonín",
            study_date="20240201",
            accession="ACC3",
            study_description="CT Head",
            EthnicGroup=el("SH", "Czech"),
            PatientAge=el("AS", "062Y"),
            NameOfPhysiciansReadingStudy=pn("Cuddy^Lisa"),
            PatientPosition=el("CS", "HFS"),
            ContentDate=el("DA", "20240201"),
        ),
        instance(
            4,
            1,
            1,
            patient_id="PAT3",
            name="O[Brien]^Pat",
            study_date="",
            accession="",
            study_description="US [Abdomen]",
            modality="US",
            sop_class="1.2.840.10008.5.1.4.1.1.6.1",
            series_description="",
        ),
    ]
    run(catalog.upsert_instances(records))
    return catalog


def _expect(
    run: Runner,
    catalog: Catalog,
    level: Level,
    identifier: DicomJson,
    expected: list[str],
    **options: Any,
) -> list[DicomJson]:
    """Assert the query finds exactly ``expected`` (unique keys), as a brute-force scan does."""
    found = find(run, catalog, level, identifier, **options)
    assert uids(found, UNIQUE[level]) == sorted(expected), identifier
    # Whatever an adapter pre-filters, the answer is what matching every entity gives.
    everything = find(run, catalog, level, {})
    brute = [
        e
        for e in everything
        if matching.matches(
            e, identifier, case_insensitive_pn=options.get("case_insensitive_pn", False)
        )
    ]
    assert uids(found, UNIQUE[level]) == uids(brute, UNIQUE[level]), identifier
    return found


def test_patient_level_queries(archive: Catalog, run: Runner) -> None:
    level = Level.PATIENT
    _expect(run, archive, level, {PATIENT_ID: el("LO", "PAT2")}, ["PAT2"])
    _expect(run, archive, level, {PATIENT_NAME: pn("Doe*")}, ["PAT1"])
    _expect(run, archive, level, {PATIENT_NAME: pn("D*")}, ["PAT1", "PAT2"])
    _expect(run, archive, level, {PATIENT_NAME: pn("?o?^J*")}, ["PAT1"])
    _expect(run, archive, level, {ETHNIC_GROUP: el("SH", "Czech")}, ["PAT2"])
    _expect(run, archive, level, {ETHNIC_GROUP: el("SH", "Nor*")}, ["PAT1"])
    _expect(
        run, archive, level, {PATIENT_NAME: pn("D*"), ETHNIC_GROUP: el("SH", "Nordic")}, ["PAT1"]
    )
    _expect(run, archive, level, {PATIENT_NAME: pn("Doe*"), ETHNIC_GROUP: el("SH", "Czech")}, [])
    _expect(
        run, archive, level, {"00100030": el("DA", "19690101-19701231")}, ["PAT1", "PAT2", "PAT3"]
    )
    _expect(run, archive, level, {"00100030": el("DA", "19710101-")}, [])


def test_study_level_queries(archive: Catalog, run: Runner) -> None:
    level = Level.STUDY
    _expect(run, archive, level, {PATIENT_ID: el("LO", "PAT1")}, [uid(1), uid(2)])
    _expect(run, archive, level, {ACCESSION: el("SH", "ACC3")}, [uid(3)])
    _expect(run, archive, level, {STUDY_DATE: el("DA", "20240115")}, [uid(1)])
    _expect(run, archive, level, {STUDY_DATE: el("DA", "20240101-20241231")}, [uid(1), uid(3)])
    _expect(run, archive, level, {STUDY_DATE: el("DA", "-20231231")}, [uid(2)])
    _expect(run, archive, level, {STUDY_DATE: el("DA", "20240116-")}, [uid(3)])
    _expect(run, archive, level, {STUDY_DESCRIPTION: el("LO", "CT*")}, [uid(1), uid(3)])
    _expect(run, archive, level, {STUDY_DESCRIPTION: el("LO", "*Knee")}, [uid(2)])
    _expect(run, archive, level, {STUDY_UID: el("UI", uid(1), uid(3), uid(99))}, [uid(1), uid(3)])
    _expect(run, archive, level, {PATIENT_NAME: pn("Dvo*")}, [uid(3)])
    # keys only in the stored JSON
    _expect(run, archive, level, {PATIENT_AGE: el("AS", "053Y")}, [uid(2)])
    _expect(run, archive, level, {READING_PHYSICIAN: pn("*Gregory")}, [uid(1)])
    _expect(
        run,
        archive,
        level,
        {PROCEDURE_CODE: el("SQ", {"00080100": el("SH", "CTCH")})},
        [uid(1)],
    )
    # an indexed key and a JSON-only key together
    _expect(
        run,
        archive,
        level,
        {STUDY_DATE: el("DA", "20240101-20241231"), PATIENT_AGE: el("AS", "062Y")},
        [uid(3)],
    )
    _expect(
        run,
        archive,
        level,
        {PATIENT_ID: el("LO", "PAT1"), READING_PHYSICIAN: pn("Cuddy^Lisa")},
        [],
    )
    _expect(
        run,
        archive,
        level,
        {tags.MODALITIES_IN_STUDY: el("CS", "PR")},
        [uid(1)],
    )


def test_series_level_queries(archive: Catalog, run: Runner) -> None:
    level = Level.SERIES
    _expect(run, archive, level, {MODALITY: el("CS", "CT")}, [uid(1, 1), uid(3, 1)])
    _expect(run, archive, level, {STUDY_UID: el("UI", uid(1))}, [uid(1, 1), uid(1, 2)])
    _expect(run, archive, level, {SERIES_DESCRIPTION: el("LO", "*images")}, [uid(1, 2)])
    _expect(
        run, archive, level, {SERIES_UID: el("UI", uid(2, 1), uid(4, 1))}, [uid(2, 1), uid(4, 1)]
    )
    _expect(run, archive, level, {PATIENT_POSITION: el("CS", "FFS")}, [uid(1, 2), uid(2, 1)])
    _expect(run, archive, level, {PPS_START_DATE: el("DA", "20240101-")}, [uid(1, 1)])
    _expect(
        run,
        archive,
        level,
        {
            MODALITY: el("CS", "CT"),
            PATIENT_POSITION: el("CS", "HFS"),
            STUDY_DATE: el("DA", "20240101-20241231"),
        },
        [uid(1, 1), uid(3, 1)],
    )
    _expect(run, archive, level, {MODALITY: el("CS", "MR"), PATIENT_POSITION: el("CS", "HFS")}, [])


def test_image_level_queries(archive: Catalog, run: Runner) -> None:
    level = Level.IMAGE
    series_1 = [uid(1, 1, n) for n in (1, 2, 3)]
    _expect(run, archive, level, {SERIES_UID: el("UI", uid(1, 1))}, series_1)
    _expect(run, archive, level, {SOP_CLASS: el("UI", GSPS)}, [uid(1, 2, 1)])
    _expect(
        run,
        archive,
        level,
        {SOP_UID: el("UI", uid(1, 1, 2), uid(2, 1, 1))},
        [uid(1, 1, 2), uid(2, 1, 1)],
    )
    _expect(
        run,
        archive,
        level,
        {CONTENT_DATE: el("DA", "20240116-20240201")},
        [uid(1, 2, 1), uid(3, 1, 1)],
    )
    _expect(run, archive, level, {IMAGE_TYPE: el("CS", "AXIAL")}, series_1)
    _expect(run, archive, level, {ACQUISITION_NUMBER: el("IS", 2)}, [uid(1, 1, 2)])
    _expect(run, archive, level, {"00200052": el("UI", uid(900, 1))}, series_1)
    _expect(run, archive, level, {"00200052": el("UI", uid(900, 2), uid(900, 1))}, series_1)
    _expect(
        run,
        archive,
        level,
        {SERIES_UID: el("UI", uid(1, 1)), ACQUISITION_NUMBER: el("IS", 3)},
        [uid(1, 1, 3)],
    )


def test_several_values_match_any_of_them(archive: Catalog, run: Runner) -> None:
    level = Level.SERIES
    _expect(run, archive, level, {MODALITY: el("CS", "MR", "US")}, [uid(2, 1), uid(4, 1)])
    _expect(
        run, archive, level, {SERIES_DESCRIPTION: el("LO", "Sag*", "Key*")}, [uid(1, 2), uid(2, 1)]
    )
    _expect(run, archive, level, {PATIENT_POSITION: el("CS", "FFS", "XYZ")}, [uid(1, 2), uid(2, 1)])
    _expect(
        run,
        archive,
        Level.STUDY,
        {tags.MODALITIES_IN_STUDY: el("CS", "MR", "US")},
        [uid(2), uid(4)],
    )


def test_upper_levels_keep_attributes_a_later_object_lacks(catalog: Catalog, run: Runner) -> None:
    image = instance(1, 1, 1, ProcedureCodeSequence=el("SQ", {"00080100": el("SH", "CTCH")}))
    state = instance(1, 2, 1, modality="PR", sop_class=GSPS)
    del state.header[STUDY_DESCRIPTION]
    run(catalog.upsert_instances([image]))
    run(catalog.upsert_instances([state]))

    (study,) = find(run, catalog, Level.STUDY, {})
    assert first(study, STUDY_DESCRIPTION) == "CT Chest"
    assert PROCEDURE_CODE in study
    _expect(run, catalog, Level.STUDY, {STUDY_DESCRIPTION: el("LO", "CT*")}, [uid(1)])


def test_stored_values_are_matched_as_normalised(catalog: Catalog, run: Runner) -> None:
    padded = instance(1, 1, 1, patient_id="PAT1", name="Smith^Anna^^^ ", study_date="2023.05.06")
    turkish = instance(2, 1, 1, patient_id="PAT2", name="İsmail^Öztürk", study_date="20230507")
    german = instance(3, 1, 1, patient_id="PAT3", name="Straße^Jürgen", study_date="20230508")
    run(catalog.upsert_instances([padded, turkish, german]))

    level = Level.STUDY
    _expect(run, catalog, level, {PATIENT_NAME: pn("Smith^Anna")}, [uid(1)])
    _expect(run, catalog, level, {PATIENT_NAME: pn("Smith^Anna^")}, [uid(1)])
    _expect(run, catalog, level, {PATIENT_NAME: pn("Smith^A*")}, [uid(1)])
    _expect(run, catalog, level, {PATIENT_NAME: pn("*Anna")}, [uid(1)])
    _expect(run, catalog, level, {STUDY_DATE: el("DA", "20230506")}, [uid(1)])
    _expect(run, catalog, level, {STUDY_DATE: el("DA", "20230501-20230506")}, [uid(1)])
    _expect(run, catalog, level, {STUDY_DATE: el("DA", "20230507-")}, [uid(2), uid(3)])
    for name in ("ismail*", "İSMAİL*", "ISMAIL^ÖZTÜRK", "strasse^jürgen", "STRAẞE*", "s?rasse*"):
        found = find(run, catalog, level, {PATIENT_NAME: pn(name)}, case_insensitive_pn=True)
        brute = [
            s
            for s in find(run, catalog, level, {})
            if matching.matches(s, {PATIENT_NAME: pn(name)}, case_insensitive_pn=True)
        ]
        assert uids(found, STUDY_UID) == uids(brute, STUDY_UID), name
    _expect(run, catalog, level, {PATIENT_NAME: pn("ismail*")}, [uid(2)], case_insensitive_pn=True)
    _expect(
        run,
        catalog,
        level,
        {PATIENT_NAME: pn("STRASSE^JÜRGEN")},
        [uid(3)],
        case_insensitive_pn=True,
    )


def test_brackets_are_literal_in_patterns(archive: Catalog, run: Runner) -> None:
    _expect(run, archive, Level.PATIENT, {PATIENT_NAME: pn("O[B*")}, ["PAT3"])
    _expect(run, archive, Level.PATIENT, {PATIENT_NAME: pn("O[Brien]^Pat")}, ["PAT3"])
    _expect(run, archive, Level.PATIENT, {PATIENT_NAME: pn("O[A-Z]*")}, [])
    _expect(run, archive, Level.STUDY, {STUDY_DESCRIPTION: el("LO", "*[Abdomen]")}, [uid(4)])


def test_case_insensitive_person_names(archive: Catalog, run: Runner) -> None:
    for name in ("dvořák*", "DVOŘÁK^ANTONÍN", "dvořák^antonín"):
        _expect(run, archive, Level.STUDY, {PATIENT_NAME: pn(name)}, [])
        _expect(
            run, archive, Level.STUDY, {PATIENT_NAME: pn(name)}, [uid(3)], case_insensitive_pn=True
        )
    # Only person names: other text stays case-sensitive.
    _expect(
        run,
        archive,
        Level.STUDY,
        {STUDY_DESCRIPTION: el("LO", "ct*")},
        [],
        case_insensitive_pn=True,
    )


def test_a_multi_valued_attribute_is_still_found(catalog: Catalog, run: Runner) -> None:
    run(
        catalog.upsert_instances(
            [
                instance(1, 1, 1, accession="A1"),
                replace(
                    instance(2, 1, 1),
                    header={**instance(2, 1, 1).header, ACCESSION: el("SH", "A2", "A3")},
                ),
            ]
        )
    )

    _expect(run, catalog, Level.STUDY, {ACCESSION: el("SH", "A3")}, [uid(2)])
    _expect(run, catalog, Level.STUDY, {ACCESSION: el("SH", "A1")}, [uid(1)])


def test_limit_and_offset(archive: Catalog, run: Runner) -> None:
    everything = uids(find(run, archive, Level.IMAGE, {}), SOP_UID)
    assert len(everything) == 8

    pages = [find(run, archive, Level.IMAGE, {}, limit=3, offset=offset) for offset in (0, 3, 6, 9)]

    assert [len(page) for page in pages] == [3, 3, 2, 0]
    assert sorted(first(f, SOP_UID) for page in pages for f in page) == everything
    assert len(find(run, archive, Level.IMAGE, {}, limit=0, offset=2)) == 6
    # The window applies to matches, not to pre-filtered candidates.
    matched = find(run, archive, Level.IMAGE, {IMAGE_TYPE: el("CS", "AXIAL")}, limit=2, offset=1)
    assert len(matched) == 2
    assert set(uids(matched, SOP_UID)) <= {uid(1, 1, n) for n in (1, 2, 3)}


def test_query_order_is_stable(archive: Catalog, run: Runner) -> None:
    once = [first(f, SOP_UID) for f in find(run, archive, Level.IMAGE, {})]
    twice = [first(f, SOP_UID) for f in find(run, archive, Level.IMAGE, {})]
    assert once == twice


def test_negative_window_is_refused(archive: Catalog, run: Runner) -> None:
    with pytest.raises(InvalidInput):
        find(run, archive, Level.STUDY, {}, limit=-1)


def test_a_query_throwing_away_more_than_max_examined_is_refused(
    catalog: Catalog, run: Runner
) -> None:
    """ImageComments has no index: every instance is a candidate, read and matched. The
    bound counts the candidates thrown away (and matches skipped for the offset), never
    the matches returned, so a query narrowed by an indexed key is not refused."""
    run(
        catalog.upsert_instances(
            [instance(1, 1, n, ImageComments=el("LT", "plain")) for n in range(1, 11)]
            + [instance(2, 1, n, ImageComments=el("LT", "needle")) for n in (1, 2)]
        )
    )
    needle = {tags.tag_of("ImageComments"): el("LT", "*needle*"), SOP_UID: el("UI")}
    plain = {tags.tag_of("ImageComments"): el("LT", "*pl?in"), SOP_UID: el("UI")}

    with pytest.raises(QueryTooBroad, match="more than 5 records"):
        find(run, catalog, Level.IMAGE, needle, max_examined=5)
    # Exactly the bound thrown away (the ten plain instances) is still answered.
    assert len(find(run, catalog, Level.IMAGE, needle, max_examined=10)) == 2
    assert len(find(run, catalog, Level.IMAGE, needle, max_examined=0)) == 2
    in_study = {**needle, STUDY_UID: el("UI", uid(2))}
    assert len(find(run, catalog, Level.IMAGE, in_study, max_examined=1)) == 2
    # Matches returned cost nothing; matches skipped for an offset do (plus the 2 needles).
    assert len(find(run, catalog, Level.IMAGE, plain, max_examined=2)) == 10
    assert len(find(run, catalog, Level.IMAGE, plain, max_examined=4, offset=2)) == 8
    with pytest.raises(QueryTooBroad):
        find(run, catalog, Level.IMAGE, plain, max_examined=4, offset=3)
    # The same at the study level, on a study attribute without an index.
    reading = {READING_PHYSICIAN: pn("*Nobody*")}
    with pytest.raises(QueryTooBroad):
        find(run, catalog, Level.STUDY, reading, max_examined=1)
    assert find(run, catalog, Level.STUDY, reading, max_examined=2) == []


# -- locate -----------------------------------------------------------------------------------


def test_locate(archive: Catalog, run: Runner) -> None:
    def sops(**filters: list[str]) -> list[str]:
        return sorted(loc.sop_instance_uid for loc in run(archive.locate(**filters)))

    assert sops(study_uids=[uid(2)]) == [uid(2, 1, 1), uid(2, 1, 2)]
    assert sops(series_uids=[uid(1, 2), uid(3, 1)]) == [uid(1, 2, 1), uid(3, 1, 1)]
    assert sops(sop_instance_uids=[uid(1, 1, 3), uid(9, 9, 9)]) == [uid(1, 1, 3)]
    assert sops(patient_ids=["PAT2", "PAT3"]) == [uid(3, 1, 1), uid(4, 1, 1)]
    assert sops(study_uids=[uid(1)], series_uids=[uid(1, 2)]) == [uid(1, 2, 1)]
    assert sops(study_uids=[uid(1)], series_uids=[uid(2, 1)]) == []
    assert sops(patient_ids=["PAT1"], study_uids=[uid(3)]) == []
    assert sops(study_uids=[uid(99)]) == []

    (location,) = run(archive.locate(sop_instance_uids=[uid(1, 2, 1)]))
    assert location.sop_class_uid == GSPS
    assert location.series_instance_uid == uid(1, 2)
    assert location.study_instance_uid == uid(1)
    assert location.object_key == f"default/{uid(1)}/{uid(1, 2)}/{uid(1, 2, 1)}.dcm"
    assert location.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert location.size == 1001


# -- nodes ------------------------------------------------------------------------------------


def test_credentials_add_replace_remove(catalog: Catalog, run: Runner) -> None:
    token = Credential(
        kind="token",
        name="k3y1d",
        secret_hash="ab" * 32,
        role="viewer",
        description="reading room 2",
        expires_at="2027-01-01T00:00:00+00:00",
        created_at="2026-12-01T00:00:00+00:00",
    )
    user = Credential(kind="user", name="jnovak", secret_hash="$argon2id$v=19$x", role="operator")
    run(catalog.put_credential(token))
    run(catalog.put_credential(user))
    assert run(catalog.credential("token", "k3y1d")) == token
    assert run(catalog.credential("user", "k3y1d")) is None  # kinds never mix
    assert run(catalog.credentials("user")) == [user]
    promoted = replace(user, role="administrator")
    run(catalog.put_credential(promoted))
    assert run(catalog.credential("user", "jnovak")) == promoted
    assert run(catalog.remove_credential("token", "k3y1d")) is True
    assert run(catalog.remove_credential("token", "k3y1d")) is False
    assert run(catalog.credentials("token")) == []
    assert "ab" * 32 not in repr(token)  # the hash stays out of logs and reprs


def test_nodes_add_replace_remove(catalog: Catalog, run: Runner) -> None:
    console = Node(
        ae_title="CT_CONSOLE",
        host="10.0.0.5",
        port=104,
        description="CT room 1",
        tls=True,
        issuer_of_patient_id="HOSP",
        issuer_of_accession_number="RIS",
        user_id="ct",
        storage_group="ct",
        ae_group="diagnostic",
    )
    planning = Node(ae_title="RT_PLAN", host="rt.example", port=11112)
    run(catalog.put_node(planning))
    run(catalog.put_node(console))
    assert run(catalog.nodes()) == [console, planning]

    moved = replace(console, host="10.0.0.6", port=4006, tls=False, ae_group="")
    run(catalog.put_node(moved))
    assert run(catalog.nodes()) == [moved, planning]

    assert run(catalog.remove_node("CT_CONSOLE")) is True
    assert run(catalog.remove_node("CT_CONSOLE")) is False
    assert run(catalog.nodes()) == [planning]


def test_a_new_node_may_do_everything_from_its_host(catalog: Catalog, run: Runner) -> None:
    run(catalog.put_node(Node(ae_title="WS1", host="ws1.example", port=104)))
    (stored,) = run(catalog.nodes())
    assert (stored.store, stored.query, stored.retrieve, stored.move_destination) == (True,) * 4
    assert stored.from_host is True
    assert stored.allowed_from == ()


def test_node_permissions_and_networks_are_kept(catalog: Catalog, run: Runner) -> None:
    viewer = Node(
        ae_title="VIEWER",
        host="10.0.0.7",
        port=11112,
        store=False,
        move_destination=False,
        allowed_from=("10.1.2.0/24", "fd00::/64"),
        from_host=False,
    )
    modality = Node(ae_title="MR1", host="10.0.0.8", port=104, query=False, retrieve=False)
    run(catalog.put_node(viewer))
    run(catalog.put_node(modality))
    assert run(catalog.nodes()) == [modality, viewer]

    widened = replace(viewer, store=True, allowed_from=("10.1.0.0/16",), from_host=True)
    run(catalog.put_node(widened))
    assert run(catalog.nodes()) == [modality, widened]


def test_node_networks_are_kept_as_networks(catalog: Catalog, run: Runner) -> None:
    run(catalog.put_node(Node(ae_title="WS2", host="h", port=104, allowed_from=("10.1.2.3/24",))))
    assert run(catalog.nodes())[0].allowed_from == ("10.1.2.0/24",)


@pytest.mark.parametrize("network", ["10.1.2.0/33", "somewhere", "10.1.2.0/24; DROP"])
def test_a_node_network_that_is_no_cidr_is_refused(
    catalog: Catalog, run: Runner, network: str
) -> None:
    node = Node(ae_title="BAD", host="h", port=104, allowed_from=(network,))
    with pytest.raises(InvalidInput, match="allowed_from of BAD"):
        run(catalog.put_node(node))
    assert run(catalog.nodes()) == []


FINGERPRINT = "3f" * 32


def test_node_certificate_fingerprints_are_kept_normalised(catalog: Catalog, run: Runner) -> None:
    as_openssl_prints_it = ":".join(["3F"] * 32)
    node = Node(
        ae_title="TLS_CT",
        host="h",
        port=104,
        user_id="ct-console",
        tls_certificates=(as_openssl_prints_it, "0a" * 32),
    )
    run(catalog.put_node(node))
    (stored,) = run(catalog.nodes())
    assert stored == replace(node, tls_certificates=(FINGERPRINT, "0a" * 32))
    run(catalog.put_node(replace(stored, tls_certificates=())))
    assert run(catalog.nodes())[0].tls_certificates == ()


@pytest.mark.parametrize("fingerprint", ["3f" * 31, "zz" * 32, "3f" * 32 + "'; DROP"])
def test_a_node_certificate_that_is_no_sha256_fingerprint_is_refused(
    catalog: Catalog, run: Runner, fingerprint: str
) -> None:
    node = Node(ae_title="BAD", host="h", port=104, tls_certificates=(fingerprint,))
    with pytest.raises(InvalidInput, match="tls_certificates of BAD"):
        run(catalog.put_node(node))
    assert run(catalog.nodes()) == []


def test_empty_catalog(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.counts()) == CatalogCounts(0, 0, 0, 0)
    assert find(run, catalog, Level.STUDY, {}) == []
    assert run(catalog.locate(study_uids=[uid(1)])) == []
    assert run(catalog.nodes()) == []
    run(catalog.check())


def test_a_series_moved_to_another_study_takes_its_instances(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, n) for n in (1, 2)] + [instance(1, 2, 1)]))
    moved = [
        replace(
            record,
            study_instance_uid=uid(2),
            header={**record.header, STUDY_UID: el("UI", uid(2))},
        )
        for record in (instance(1, 2, 1, modality="MR"),)
    ]
    run(catalog.upsert_instances(moved))

    studies = {first(s, STUDY_UID): s for s in find(run, catalog, Level.STUDY, {})}
    assert first(studies[uid(1)], tags.NUMBER_OF_STUDY_RELATED_SERIES) == 1
    assert first(studies[uid(1)], tags.NUMBER_OF_STUDY_RELATED_INSTANCES) == 2
    assert all_of(studies[uid(1)], tags.MODALITIES_IN_STUDY) == ["CT"]
    assert first(studies[uid(2)], tags.NUMBER_OF_STUDY_RELATED_SERIES) == 1
    assert all_of(studies[uid(2)], tags.MODALITIES_IN_STUDY) == ["MR"]
    assert sorted(loc.sop_instance_uid for loc in run(catalog.locate(study_uids=[uid(2)]))) == [
        uid(1, 2, 1)
    ]
    (patient,) = find(run, catalog, Level.PATIENT, {})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 2
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_SERIES) == 2
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 3


def test_an_instance_sent_again_in_another_series_moves(catalog: Catalog, run: Runner) -> None:
    first_copy = instance(1, 1, 1)
    run(catalog.upsert_instances([first_copy, instance(1, 1, 2)]))
    again = replace(
        first_copy,
        series_instance_uid=uid(1, 2),
        header={**first_copy.header, SERIES_UID: el("UI", uid(1, 2))},
    )
    run(catalog.upsert_instances([again]))

    series = {first(s, SERIES_UID): s for s in find(run, catalog, Level.SERIES, {})}
    assert {k: first(v, tags.NUMBER_OF_SERIES_RELATED_INSTANCES) for k, v in series.items()} == {
        uid(1, 1): 1,
        uid(1, 2): 1,
    }
    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=2, instances=2)
    (location,) = run(catalog.locate(sop_instance_uids=[first_copy.sop_instance_uid]))
    assert location.series_instance_uid == uid(1, 2)


def test_one_series_claimed_by_two_studies_in_a_batch_stays_consistent(
    catalog: Catalog, run: Runner
) -> None:
    early = instance(1, 1, 1)
    late = instance(1, 1, 2)
    late = replace(
        late, study_instance_uid=uid(2), header={**late.header, STUDY_UID: el("UI", uid(2))}
    )

    run(catalog.upsert_instances([early, late]))

    assert run(catalog.counts()) == CatalogCounts(patients=1, studies=1, series=1, instances=2)
    (study,) = find(run, catalog, Level.STUDY, {})
    assert first(study, STUDY_UID) == uid(2)  # the latest record decides
    assert first(study, tags.NUMBER_OF_STUDY_RELATED_INSTANCES) == 2
    (patient,) = find(run, catalog, Level.PATIENT, {})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 1


def test_multi_valued_modality_counts_every_value(catalog: Catalog, run: Runner) -> None:
    odd = instance(1, 1, 1)
    odd = replace(odd, header={**odd.header, MODALITY: el("CS", "PT", "CT")})
    run(catalog.upsert_instances([odd, instance(1, 2, 1, modality="SR")]))

    (study,) = find(run, catalog, Level.STUDY, {})
    assert sorted(all_of(study, tags.MODALITIES_IN_STUDY)) == ["CT", "PT", "SR"]
    for modality in ("PT", "CT", "SR"):
        _expect(run, catalog, Level.STUDY, {tags.MODALITIES_IN_STUDY: el("CS", modality)}, [uid(1)])
        _expect(
            run,
            catalog,
            Level.SERIES,
            {MODALITY: el("CS", modality)},
            [uid(1, 1 if modality != "SR" else 2)],
        )


# -- embedded adapter specifics ---------------------------------------------------------------


def _sqlite(catalog: Catalog) -> Any:
    from micropacs.adapters.sqlite_catalog import SqliteCatalog

    if not isinstance(catalog, SqliteCatalog):
        pytest.skip("SQLite catalog only")
    return catalog


@pytest.mark.parametrize(
    ("level", "identifier", "index"),
    [
        (Level.STUDY, {PATIENT_ID: el("LO", "PAT1")}, "patients"),
        (Level.STUDY, {PATIENT_NAME: pn("Doe^J*")}, "patients_name"),
        (Level.STUDY, {STUDY_DATE: el("DA", "20240101-20240131")}, "studies_date"),
        (Level.STUDY, {ACCESSION: el("SH", "ACC1")}, "studies_accession"),
        (Level.IMAGE, {SERIES_UID: el("UI", uid(1, 1))}, "series"),
        (Level.SERIES, {STUDY_UID: el("UI", uid(1), uid(2))}, "studies"),
    ],
)
def test_sqlite_queries_on_indexed_keys_use_an_index(
    catalog: Catalog, run: Runner, level: Level, identifier: DicomJson, index: str
) -> None:
    import sqlite3
    from contextlib import closing

    from micropacs.adapters._sqlite_catalog_query import select_sql

    sqlite_catalog = _sqlite(catalog)
    run(catalog.upsert_instances([instance(1, 1, 1)]))
    sql, params = select_sql(Query(level=level, identifier=identifier), set())
    with closing(sqlite3.connect(sqlite_catalog.path)) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    assert index in plan[0] and plan[0].startswith("SEARCH"), plan
    assert not any(re.match(r"SCAN (p|s|se|i)\b", step) for step in plan), plan


def test_sqlite_queries_answer_while_another_process_writes(catalog: Catalog, run: Runner) -> None:
    import sqlite3
    from contextlib import closing

    sqlite_catalog = _sqlite(catalog)
    run(catalog.upsert_instances([instance(1, 1, 1)]))
    with closing(sqlite3.connect(sqlite_catalog.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock, as a busy index would
        other.execute("DELETE FROM nodes")
        assert len(find(run, catalog, Level.IMAGE, {})) == 1
        assert run(catalog.counts()).instances == 1
        other.execute("ROLLBACK")


def test_sqlite_refuses_a_catalog_of_another_schema_version(catalog_url: str, run: Runner) -> None:
    import sqlite3
    from contextlib import closing

    from micropacs.adapters.factory import _local_path, open_catalog
    from micropacs.errors import CatalogUnavailable

    path = _local_path(catalog_url)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CatalogUnavailable, match="schema version 99"):
        run(open_catalog(catalog_url))


NODES_OF_SCHEMA_2 = """
CREATE TABLE nodes (
    ae_title TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    description TEXT NOT NULL,
    tls INTEGER NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    issuer_of_accession_number TEXT NOT NULL,
    user_id TEXT NOT NULL,
    storage_group TEXT NOT NULL,
    ae_group TEXT NOT NULL
)
"""
"""The nodes table as schema versions 1 and 2 had it, before access control."""


def _old_catalog(catalog_url: str, run: Runner, version: int) -> Any:
    """A catalog with one instance and the node CT_OLD in the tables of schema ``version``."""
    import sqlite3
    from contextlib import closing

    from micropacs.adapters.factory import _local_path, open_catalog

    first = run(open_catalog(catalog_url))
    run(first.upsert_instances([instance(1, 1, 1)]))
    run(first.close())
    with closing(sqlite3.connect(_local_path(catalog_url))) as conn:
        if version < 2:
            conn.execute("ALTER TABLE instances DROP COLUMN original_transfer_syntax_uid")
        if version < 7:
            conn.execute("ALTER TABLE instances DROP COLUMN sha256")
        conn.execute("DROP TABLE nodes")
        conn.execute(NODES_OF_SCHEMA_2)
        conn.execute(
            "INSERT INTO nodes VALUES ('CT_OLD', '10.0.0.5', 104, 'CT', 1, 'HOSP', '', '', '',"
            " 'diagnostic')"
        )
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    return _local_path(catalog_url)


def _schema_version(path: Any) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


OLD_NODE = Node(
    ae_title="CT_OLD",
    host="10.0.0.5",
    port=104,
    description="CT",
    tls=True,
    issuer_of_patient_id="HOSP",
    ae_group="diagnostic",
)
"""CT_OLD as it reads after migration: it may do everything, from its host."""


def test_mongodb_nodes_stored_before_access_control_may_do_everything(
    catalog: Catalog, run: Runner
) -> None:
    from micropacs.adapters.mongo import MongoCatalog

    if not isinstance(catalog, MongoCatalog):
        pytest.skip("MongoDB catalog only")
    old_fields = {
        "host": "10.0.0.5",
        "port": 104,
        "description": "CT",
        "tls": True,
        "issuer_of_patient_id": "HOSP",
        "issuer_of_accession_number": "",
        "user_id": "",
        "storage_group": "",
        "ae_group": "diagnostic",
    }
    run(catalog._db.nodes.insert_one({"_id": "CT_OLD", **old_fields}))
    assert run(catalog.nodes()) == [OLD_NODE]


def test_sqlite_migrates_a_version_1_catalog(catalog_url: str, run: Runner) -> None:
    from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
    from micropacs.adapters.factory import open_catalog

    path = _old_catalog(catalog_url, run, 1)

    migrated = run(open_catalog(catalog_url))
    run(migrated.upsert_instances([instance(1, 1, 2)]))

    assert run(migrated.counts()).instances == 2
    assert run(migrated.nodes()) == [OLD_NODE]
    run(migrated.close())
    assert _schema_version(path) == SCHEMA_VERSION


def test_sqlite_migrates_a_version_2_catalog_keeping_its_nodes(
    catalog_url: str, run: Runner
) -> None:
    from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
    from micropacs.adapters.factory import open_catalog

    path = _old_catalog(catalog_url, run, 2)

    migrated = run(open_catalog(catalog_url))
    assert run(migrated.nodes()) == [OLD_NODE]
    assert run(migrated.counts()).instances == 1
    restricted = replace(OLD_NODE, store=False, allowed_from=("10.0.1.0/24",))
    run(migrated.put_node(restricted))
    run(migrated.close())
    assert _schema_version(path) == SCHEMA_VERSION

    again = run(open_catalog(catalog_url))  # opening a migrated catalog changes nothing
    assert run(again.nodes()) == [restricted]
    run(again.close())


def test_sqlite_migrates_a_version_3_catalog_binding_no_certificates(
    catalog_url: str, run: Runner
) -> None:
    import sqlite3
    from contextlib import closing

    from micropacs.adapters._sqlite_catalog_schema import SCHEMA_VERSION
    from micropacs.adapters.factory import open_catalog

    path = _old_catalog(catalog_url, run, 2)
    with closing(sqlite3.connect(path)) as conn:  # the version 3 nodes table: access control
        for column in ("may_store", "may_query", "may_retrieve", "may_be_move_destination"):
            conn.execute(f"ALTER TABLE nodes ADD COLUMN {column} INTEGER NOT NULL DEFAULT 1")
        conn.execute("ALTER TABLE nodes ADD COLUMN allowed_from TEXT NOT NULL DEFAULT '[]'")
        conn.execute("ALTER TABLE nodes ADD COLUMN from_host INTEGER NOT NULL DEFAULT 1")
        conn.execute("UPDATE nodes SET may_store = 0, allowed_from = '[\"10.0.1.0/24\"]'")
        conn.execute("PRAGMA user_version = 3")
        conn.commit()

    migrated = run(open_catalog(catalog_url))
    kept = replace(OLD_NODE, store=False, allowed_from=("10.0.1.0/24",))
    assert run(migrated.nodes()) == [kept]
    bound = replace(kept, tls_certificates=(FINGERPRINT,))
    run(migrated.put_node(bound))
    assert run(migrated.nodes()) == [bound]
    run(migrated.close())
    assert _schema_version(path) == SCHEMA_VERSION


@pytest.mark.parametrize(
    "url", ["mongodb://localhost:27017/", "mongodb://h/bad.name", "postgres://x", "catalog.db"]
)
def test_factory_refuses_catalogs_it_cannot_open(run: Runner, url: str) -> None:
    from micropacs.adapters.factory import open_catalog

    with pytest.raises(InvalidInput):
        run(open_catalog(url))


def test_an_unreachable_mongodb_is_unavailable_with_advice(run: Runner) -> None:
    from micropacs.adapters.factory import open_catalog
    from micropacs.errors import CatalogUnavailable

    with pytest.raises(CatalogUnavailable, match="check that MongoDB"):
        run(open_catalog("mongodb://127.0.0.1:9/pacs"))


# -- patient updates and merges (HL7 ADT^A08, ADT^A40) ----------------------------------------

BIRTH_DATE = "00100030"
ISSUER = "00100021"
A08 = {PATIENT_NAME: pn("Doe^Jane"), BIRTH_DATE: el("DA", "19800202"), ETHNIC_GROUP: el("SH", "X")}


def _names(found: Iterable[DicomJson]) -> list[str]:
    return sorted(first(f, PATIENT_NAME)["Alphabetic"] for f in found)


def test_an_update_changes_the_patient_at_every_level(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, 1), instance(1, 2, 2), instance(2, 1, 1)]))

    assert run(catalog.update_patient("PAT1", "", A08)) == 2
    assert run(catalog.update_patient("PAT1", "", A08)) == 2  # idempotent

    for level in Level:
        found = find(run, catalog, level, {PATIENT_NAME: pn("Doe^Jane"), ETHNIC_GROUP: el("SH")})
        assert len(found) == {Level.PATIENT: 1, Level.STUDY: 2, Level.SERIES: 3}.get(level, 3)
        assert {first(f, BIRTH_DATE) for f in found} == {"19800202"}
        assert {first(f, ETHNIC_GROUP) for f in found} == {"X"}
        assert find(run, catalog, level, {PATIENT_NAME: pn("Doe^John")}) == []
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "PAT1")})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 3
    located = run(catalog.locate(study_uids=[uid(1)]))
    assert {first(loc.patient, PATIENT_NAME)["Alphabetic"] for loc in located} == {"Doe^Jane"}
    assert {first(loc.patient, PATIENT_ID) for loc in located} == {"PAT1"}


def test_an_update_wins_over_objects_stored_after_it(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.update_patient("PAT1", "", A08)) == 0  # no study yet: recorded
    run(catalog.upsert_instances([instance(1, 1, 1)]))

    (study,) = find(run, catalog, Level.STUDY, {PATIENT_ID: el("LO", "PAT1")})
    assert _names([study]) == ["Doe^Jane"]
    assert first(study, BIRTH_DATE) == "19800202"


def test_a_later_update_changes_only_what_it_names(catalog: Catalog, run: Runner) -> None:
    # HL7 v2: an ADT^A08 without PID-7 leaves the birth date as it was.
    run(catalog.update_patient("PAT1", "", A08))
    run(catalog.update_patient("PAT1", "", {PATIENT_NAME: pn("Doe^Janet")}))
    run(catalog.upsert_instances([instance(1, 1, 1)]))  # stored after both: filed by the record

    (study,) = find(run, catalog, Level.STUDY, {PATIENT_ID: el("LO", "PAT1")})
    assert _names([study]) == ["Doe^Janet"]
    assert first(study, BIRTH_DATE) == "19800202"
    assert first(study, ETHNIC_GROUP) == "X"


def test_locate_carries_no_patient_the_ris_never_changed(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(1, 1, 1)]))
    (located,) = run(catalog.locate(study_uids=[uid(1)]))
    assert located.patient == {}


def test_a_merge_moves_the_prior_patients_studies(catalog: Catalog, run: Runner) -> None:
    run(
        catalog.upsert_instances(
            [
                instance(1, 1, 1, patient_id="OLD", issuer="H", name="Old^Name"),
                instance(1, 1, 2, patient_id="OLD", issuer="H", name="Old^Name"),
                instance(2, 1, 1, patient_id="NEW", issuer="H", name="New^Name"),
            ]
        )
    )

    assert run(catalog.merge_patient("OLD", "H", "NEW", "H")) == 1
    assert run(catalog.merge_patient("OLD", "H", "NEW", "H")) == 0  # idempotent

    assert find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "OLD")}) == []
    assert find(run, catalog, Level.STUDY, {PATIENT_ID: el("LO", "OLD")}) == []
    assert run(catalog.locate(patient_ids=["OLD"])) == []
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "NEW")})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 2
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_SERIES) == 2
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 3
    studies = find(run, catalog, Level.STUDY, {PATIENT_ID: el("LO", "NEW"), ISSUER: el("LO")})
    assert sorted(first(s, STUDY_UID) for s in studies) == [uid(1), uid(2)]
    assert _names(studies) == ["New^Name", "New^Name"]
    images = find(run, catalog, Level.IMAGE, {STUDY_UID: el("UI", uid(1)), PATIENT_ID: el("LO")})
    assert {first(i, PATIENT_ID) for i in images} == {"NEW"}
    assert len(run(catalog.locate(patient_ids=["NEW"]))) == 3
    assert {first(loc.patient, PATIENT_ID) for loc in run(catalog.locate([uid(1)]))} == {"NEW"}
    assert run(catalog.counts()).patients == 1


def test_a_merge_into_an_unknown_patient_keeps_the_demographics(
    catalog: Catalog, run: Runner
) -> None:
    run(catalog.upsert_instances([instance(1, 1, 1, patient_id="OLD", name="Old^Name")]))

    assert run(catalog.merge_patient("OLD", "", "NEW", "")) == 1

    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "NEW")})
    assert _names([patient]) == ["Old^Name"]
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_INSTANCES) == 1
    assert run(catalog.counts()).patients == 1


def test_objects_stored_under_a_merged_id_go_to_the_survivor(catalog: Catalog, run: Runner) -> None:
    run(catalog.upsert_instances([instance(2, 1, 1, patient_id="NEW", name="New^Name")]))
    run(catalog.merge_patient("OLD", "", "NEW", ""))
    run(catalog.upsert_instances([instance(1, 1, 1, patient_id="OLD", name="Old^Name")]))

    assert find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "OLD")}) == []
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "NEW")})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 2
    assert _names([patient]) == ["New^Name"]
    (study,) = find(run, catalog, Level.STUDY, {STUDY_UID: el("UI", uid(1))})
    assert first(study, PATIENT_ID) == "NEW"


def test_merges_chain_to_the_last_survivor(catalog: Catalog, run: Runner) -> None:
    run(
        catalog.upsert_instances(
            [instance(1, 1, 1, patient_id="A"), instance(2, 1, 1, patient_id="B")]
        )
    )
    run(catalog.merge_patient("A", "", "B", ""))
    run(catalog.merge_patient("B", "", "C", ""))
    run(catalog.update_patient("C", "", A08))
    run(catalog.upsert_instances([instance(3, 1, 1, patient_id="A")]))

    assert [first(p, PATIENT_ID) for p in find(run, catalog, Level.PATIENT, {})] == ["C"]
    (patient,) = find(run, catalog, Level.PATIENT, {PATIENT_ID: el("LO", "C")})
    assert first(patient, tags.NUMBER_OF_PATIENT_RELATED_STUDIES) == 3
    assert _names([patient]) == ["Doe^Jane"]
    assert run(catalog.update_patient("A", "", {PATIENT_NAME: pn("Merged^Away")})) == 0
    assert _names(find(run, catalog, Level.STUDY, {})) == ["Doe^Jane"] * 3
