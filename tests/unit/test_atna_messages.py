"""DICOM audit messages (PS3.15 A.5) and their syslog framing (RFC 5424, 5425, 5426).

The structure is checked against the element and attribute rules of the DICOM audit
message schema (PS3.15 A.5.1): the required children and attributes, their order,
the coded values' attributes and the enumerated values.
"""

from __future__ import annotations

import base64
from xml.etree import ElementTree as ET

import pytest

from micropacs.atna.messages import Source, audit_message
from micropacs.atna.syslog import octet_counted, syslog_message
from micropacs.errors import InvalidInput
from micropacs.events import AUDIT_KINDS, AuditRecorded

SOURCE = Source(audit_source_id="MICROPACS", enterprise_site_id="north", address="10.1.2.3")
STUDY = "1.2.826.0.1.3680043.10.543.9.1"

CODED = ("csd-code", "codeSystemName", "originalText")
ORDER = [
    "EventIdentification",
    "ActiveParticipant",
    "AuditSourceIdentification",
    "ParticipantObjectIdentification",
]


def check_coded(element: ET.Element) -> None:
    for attribute in CODED:
        assert element.get(attribute), f"{element.tag} lacks {attribute}"


def check_schema(root: ET.Element) -> None:
    """The rules of PS3.15 A.5.1 an AuditMessage must meet."""
    assert root.tag == "AuditMessage"
    tags = [child.tag for child in root]
    assert tags == sorted(tags, key=ORDER.index), "children out of the schema's order"
    assert tags.count("EventIdentification") == 1
    assert tags.count("ActiveParticipant") >= 1
    assert tags.count("AuditSourceIdentification") >= 1
    event = root.find("EventIdentification")
    assert event is not None
    assert event.get("EventActionCode") in {"C", "R", "U", "D", "E"}
    assert event.get("EventOutcomeIndicator") in {"0", "4", "8", "12"}
    assert event.get("EventDateTime")
    [event_id] = event.findall("EventID")
    check_coded(event_id)
    for type_code in event.findall("EventTypeCode"):
        check_coded(type_code)
    for participant in root.findall("ActiveParticipant"):
        assert participant.get("UserID")
        assert participant.get("UserIsRequestor") in {"true", "false"}
        if participant.get("NetworkAccessPointID"):
            assert participant.get("NetworkAccessPointTypeCode") in {"1", "2", "3", "4", "5"}
        for role in participant.findall("RoleIDCode"):
            check_coded(role)
    for source in root.findall("AuditSourceIdentification"):
        assert source.get("AuditSourceID")
        for code in source.findall("AuditSourceTypeCode"):
            check_coded(code)
    for obj in root.findall("ParticipantObjectIdentification"):
        assert obj.get("ParticipantObjectID")
        assert obj.get("ParticipantObjectTypeCode") in {"1", "2", "3", "4"}
        [id_type] = obj.findall("ParticipantObjectIDTypeCode")
        check_coded(id_type)


def parsed(record: AuditRecorded) -> ET.Element:
    body = audit_message(record, SOURCE)
    assert body is not None
    assert body.startswith(b"<?xml")
    root = ET.fromstring(body)
    check_schema(root)
    return root


def codes(root: ET.Element, path: str) -> list[str]:
    return [str(e.get("csd-code")) for e in root.findall(path)]


@pytest.mark.parametrize(
    ("kind", "operations", "event_id", "type_code", "action"),
    [
        ("login", {}, "110114", ["110122"], "E"),
        ("login-failed", {}, "110114", ["110122"], "E"),
        ("logout", {}, "110114", ["110123"], "E"),
        ("association", {"C-STORE": 3}, "110104", [], "C"),
        ("association", {"C-MOVE": 1}, "110104", [], "R"),
        ("association", {"C-FIND": 2}, "110112", [], "E"),
        ("store", {}, "110104", [], "C"),
        ("study-sent", {}, "110104", [], "R"),
        ("retrieve", {}, "110103", [], "R"),
        ("query", {}, "110112", [], "E"),
        ("study-deleted", {}, "110105", [], "D"),
        ("node-changed", {}, "110113", ["110128"], "E"),
        ("user-changed", {}, "110113", ["110136"], "E"),
        ("api", {}, "110113", ["110132"], "E"),
        ("application-start", {}, "110100", ["110120"], "E"),
        ("application-stop", {}, "110100", ["110121"], "E"),
    ],
)
def test_each_kind_has_its_standard_codes(
    kind: str, operations: dict[str, int], event_id: str, type_code: list[str], action: str
) -> None:
    record = AuditRecorded(
        kind=kind,
        outcome=4 if kind == "login-failed" else 0,
        actor="CT01" if kind == "association" else "alice",
        role="administrator",
        source="10.0.0.7",
        destination="MICROPACS",
        study_uids=(STUDY,),
        patient_ids=("P-1",),
        operations=operations,
        detail="why",
    )
    root = parsed(record)
    assert codes(root, "EventIdentification/EventID") == [event_id]
    assert codes(root, "EventIdentification/EventTypeCode") == type_code
    event = root.find("EventIdentification")
    assert event is not None
    assert event.get("EventActionCode") == action
    assert event.get("EventOutcomeIndicator") == str(record.outcome)
    assert event.findtext("EventOutcomeDescription") == "why"
    objects = {
        o.get("ParticipantObjectID"): o for o in root.findall("ParticipantObjectIdentification")
    }
    assert codes(objects[STUDY], "ParticipantObjectIDTypeCode") == ["110180"]
    assert objects[STUDY].get("ParticipantObjectTypeCode") == "2"
    assert codes(objects["P-1"], "ParticipantObjectIDTypeCode") == ["2"]
    assert objects["P-1"].get("ParticipantObjectTypeCodeRole") == "1"
    if event_id == "110112":
        query = objects[STUDY].findtext("ParticipantObjectQuery")
        assert query is not None
        assert base64.b64decode(query) == b"why"
    [source] = root.findall("AuditSourceIdentification")
    assert source.get("AuditSourceID") == "MICROPACS"
    assert source.get("AuditEnterpriseSiteID") == "north"


def test_every_kind_is_mapped() -> None:
    for kind in AUDIT_KINDS:
        record = AuditRecorded(kind=kind, outcome=0, actor="a", operations={"C-STORE": 1})
        assert audit_message(record, SOURCE) is not None, kind


def test_a_received_association_names_the_source_and_the_destination() -> None:
    record = AuditRecorded(
        kind="association",
        outcome=0,
        actor="CT01",
        source="10.0.0.7",
        destination="MICROPACS",
        operations={"C-STORE": 2},
    )
    root = parsed(record)
    [actor, archive] = root.findall("ActiveParticipant")
    assert (actor.get("UserID"), actor.get("UserIsRequestor")) == ("CT01", "true")
    assert (actor.get("NetworkAccessPointID"), actor.get("NetworkAccessPointTypeCode")) == (
        "10.0.0.7",
        "2",
    )
    assert codes(actor, "RoleIDCode") == ["110153"]  # Source Role ID
    assert archive.get("UserID") == "MICROPACS"
    assert codes(archive, "RoleIDCode") == ["110152"]  # Destination Role ID


def test_a_refused_association_is_a_security_alert_and_an_echo_is_not_exported() -> None:
    refused = AuditRecorded(kind="association", outcome=4, actor="EVIL", detail="rejected")
    assert codes(parsed(refused), "EventIdentification/EventTypeCode") == ["110126"]
    echo = AuditRecorded(kind="association", outcome=0, actor="CT01", operations={"C-ECHO": 1})
    assert audit_message(echo, SOURCE) is None


def test_markup_in_values_stays_text() -> None:
    record = AuditRecorded(kind="login-failed", outcome=4, actor='<x a="1">&', detail="</y>")
    root = parsed(record)
    assert root.findall("ActiveParticipant")[0].get("UserID") == '<x a="1">&'
    assert root.findtext("EventIdentification/EventOutcomeDescription") == "</y>"


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "coffee", "outcome": 0},
        {"kind": "login", "outcome": 3},
    ],
)
def test_unknown_kinds_and_outcomes_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        AuditRecorded(actor="a", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"type": "audit.recorded", "version": 2}',
        b'{"type": "audit.recorded", "version": 1, "kind": "login"}',
        b'{"type": "audit.recorded", "version": 1, "kind": "login", "outcome": 0,'
        b' "actor": "a", "operations": {"C-STORE": "many"}}',
    ],
)
def test_malformed_audit_events_are_refused(payload: bytes) -> None:
    with pytest.raises(InvalidInput):
        AuditRecorded.from_bytes(payload)


def test_an_event_survives_its_encoding_and_hides_patients_from_its_repr() -> None:
    record = AuditRecorded(
        kind="association",
        outcome=8,
        actor="CT01",
        study_uids=(STUDY,),
        patient_ids=("P-SECRET",),
        operations={"C-STORE": 5},
    )
    assert AuditRecorded.from_bytes(record.to_bytes()) == record
    assert "P-SECRET" not in repr(record)
    assert STUDY not in repr(record)


def test_syslog_message_has_the_rfc_5424_header_and_a_bom() -> None:
    message = syslog_message(b"<AuditMessage/>", "2026-03-01T10:00:00.000000+00:00", "pacs 1")
    header, _, body = message.partition(b" \xef\xbb\xbf")
    assert body == b"<AuditMessage/>"
    pri_version, timestamp, host, app, procid, msgid, structured = header.decode().split(" ")
    assert pri_version == "<85>1"  # facility 10 (authpriv) * 8 + severity 5 (notice)
    assert timestamp == "2026-03-01T10:00:00.000000+00:00"
    assert host == "pacs1"  # no spaces in a header field
    assert app == "micropacs"
    assert procid.isdigit()
    assert msgid == "IHE+RFC-3881"
    assert structured == "-"


def test_octet_counting_prefixes_the_length_in_bytes() -> None:
    message = "é".encode()
    assert octet_counted(message) == b"2 \xc3\xa9"
