"""Routing rules: the YAML file's checks (which rule, what to fix) and what each key matches
with the C-FIND matching (micropacs.routing.rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from micropacs.dicom.json_model import element
from micropacs.errors import InvalidSettings
from micropacs.events import InstanceStored
from micropacs.routing.rules import load_rules, parse_rules

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def event(
    *,
    calling: str = "CT01",
    called: str = "MICROPACS",
    sop_class: str = CT,
    modality: str = "CT",
    **header: Any,
) -> InstanceStored:
    keys = {
        "00080060": element("CS", modality),
        "00081030": element("LO", header.pop("StudyDescription", "CT THORAX")),
        "00080020": element("DA", header.pop("StudyDate", "20260315")),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Novák^Jan"}]},
    }
    return InstanceStored(
        sop_class_uid=sop_class,
        sop_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3",
        study_instance_uid="1.2",
        patient_id="P1",
        issuer_of_patient_id="",
        object_key="k",
        size=1,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_group="",
        received_at="2026-03-15T10:00:00+00:00",
        header=keys,
        calling_ae=calling,
        called_ae=called,
        site="default",
    )


def destinations(rules_text: str, stored: InstanceStored, group: str = "") -> list[str]:
    return [f.destination for f in parse_rules(rules_text).forwards(stored, group)]


def one_rule(match: str) -> str:
    return f"rules:\n  - name: r\n    match: {match}\n    forward: [{{destination: WS1}}]\n"


@pytest.mark.parametrize(
    ("match", "matched", "other"),
    [
        ("{calling_ae: CT01}", event(), event(calling="CT02")),
        ("{calling_ae: 'CT*'}", event(calling="CT02"), event(calling="MR01")),
        ("{calling_ae: [MR01, CT01]}", event(), event(calling="US01")),
        ("{called_ae: MICROPACS}", event(), event(called="BACKUP")),
        ("{modality: [CT, MR]}", event(modality="MR"), event(modality="US")),
        ("{sop_class: '1.2.840.10008.5.1.4.1.1.4'}", event(sop_class=MR), event()),
        ("{attributes: {StudyDescription: '*THORAX*'}}", event(), event(StudyDescription="HEAD")),
        ("{attributes: {StudyDate: '20260101-20260331'}}", event(), event(StudyDate="20260401")),
        ("{attributes: {00080060: CT}}", event(), event(modality="MR")),
        ("{attributes: {PatientName: 'Nov*'}}", event(), event(calling="X", modality="US")),
    ],
)
def test_each_key_matches_as_c_find_does(
    match: str, matched: InstanceStored, other: InstanceStored
) -> None:
    rules = one_rule(match)
    assert destinations(rules, matched) == ["WS1"]
    if "PatientName" not in match:
        assert destinations(rules, other) == []


def test_the_ae_group_is_the_senders_in_the_registry() -> None:
    rules = one_rule("{ae_group: radiotherapy}")
    assert parse_rules(rules).uses_ae_group
    assert destinations(rules, event(), "radiotherapy") == ["WS1"]
    assert destinations(rules, event(), "diagnostic") == []
    assert destinations(rules, event(), "") == []


def test_every_key_of_a_rule_must_match() -> None:
    rules = one_rule("{calling_ae: CT01, modality: CT, attributes: {StudyDescription: 'CT*'}}")
    assert destinations(rules, event()) == ["WS1"]
    assert destinations(rules, event(modality="MR")) == []
    assert destinations(rules, event(calling="CT02")) == []


def test_a_destination_gets_an_instance_once_in_the_first_rules_syntax() -> None:
    rules = parse_rules(
        """
rules:
  - name: ct-to-workstation
    match: {modality: CT}
    forward: [{destination: WS1}, {destination: BACKUP, transfer_syntax: jpeg2000-lossless}]
  - name: everything-to-backup
    forward:
      - destination: BACKUP
        transfer_syntax: 1.2.840.10008.1.2.1
  - name: corrections
    match: {calling_ae: CT01}
    coerce:
      - set: IssuerOfPatientID
        value: HOSPITAL_A
      - copy: PatientID
        to: OtherPatientIDs
      - remove: InstitutionAddress
"""
    )
    found = rules.forwards(event())
    assert [(f.destination, f.transfer_syntax, f.rule) for f in found] == [
        ("WS1", "", "ct-to-workstation"),
        ("BACKUP", J2K_LOSSLESS, "ct-to-workstation"),
    ]
    mr = rules.forwards(event(modality="MR", calling="MR01"))
    assert [(f.destination, f.rule) for f in mr] == [("BACKUP", "everything-to-backup")]
    assert rules.destinations == {"WS1", "BACKUP"}
    corrections = rules.rules[2].coercions
    assert [(c.action, c.tag, c.value, c.source) for c in corrections] == [
        ("set", "00100021", "HOSPITAL_A", ""),
        ("copy", "00101000", "", "00100020"),
        ("remove", "00080081", "", ""),
    ]


def test_an_empty_file_has_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing yet\n")
    assert load_rules(path).rules == ()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("rules: [", "not valid YAML"),
        ("- a\n- b\n", "a mapping with a 'rules' list"),
        ("rules: []\nrule: []\n", "rule: Extra inputs are not permitted"),
        ("rules:\n  - name: r\n", "rule 'r' (rules[0]): a rule needs an action"),
        (
            "rules:\n  - forward: [{destination: WS1}]\n",
            "rules[0]: name: Field required",
        ),
        (
            "rules:\n  - {name: a, forward: [{destination: WS1}]}\n"
            "  - {name: b, forward: [{destination: WS1, syntax: rle}]}\n",
            "rule 'b' (rules[1]): forward[0].syntax: Extra inputs are not permitted",
        ),
        (
            "rules:\n  - {name: b, forward: [{destination: WS1, transfer_syntax: mpeg4}]}\n",
            "rule 'b' (rules[0]): forward[0].transfer_syntax: 'mpeg4' is not a syntax",
        ),
        (
            "rules:\n  - {name: b, forward: [{destination: 'A\\\\B'}]}\n",
            "forward[0].destination: 'A\\\\\\\\B' is not an AE title",
        ),
        (
            "rules:\n  - {name: b, forward: [{destination: WORKSTATION_NUMBER_ONE}]}\n",
            "forward[0].destination: String should have at most 16 characters",
        ),
        (
            "rules:\n  - {name: b, match: {attributes: {Bogus: x}}, forward: [{destination: W}]}\n",
            "rule 'b' (rules[0]): match.attributes.Bogus: 'Bogus' is neither a DICOM keyword",
        ),
        (
            "rules:\n  - {name: b, match: {calling_ae: CT1, moality: CT},"
            " forward: [{destination: W}]}\n",
            "match.moality: Extra inputs are not permitted",
        ),
        (
            "rules:\n  - {name: b, coerce: [{set: PatientID}]}\n",
            "coerce[0]: set PatientID needs a value",
        ),
        (
            "rules:\n  - {name: b, coerce: [{remove: StudyInstanceUID}]}\n",
            "coerce[0].remove: StudyInstanceUID names the object",
        ),
        (
            "rules:\n  - {name: b, coerce: [{set: ReferencedSeriesSequence, value: x}]}\n",
            "coerce[0].set: ReferencedSeriesSequence is a sequence",
        ),
        (
            "rules:\n  - {name: b, forward: [{destination: W}]}\n"
            "  - {name: b, forward: [{destination: X}]}\n",
            "rule 'b' (rules[1]): another rule has this name",
        ),
    ],
)
def test_a_wrong_file_is_refused_naming_the_rule_and_the_fix(text: str, said: str) -> None:
    with pytest.raises(InvalidSettings) as refused:
        parse_rules(text, "rules.yaml")
    assert said in str(refused.value)
    assert str(refused.value).startswith("rules.yaml")


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
