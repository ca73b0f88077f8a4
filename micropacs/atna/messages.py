"""Audit records as DICOM audit messages (PS3.15 A.5, the schema of A.5.1).

Each record becomes one ``AuditMessage`` with an EventIdentification, the
ActiveParticipants (the actor, and this archive), an AuditSourceIdentification
and a ParticipantObjectIdentification per study and per patient concerned.
Codes are the standard's (PS3.16 CID 400-404; coded values carry ``csd-code``,
``codeSystemName`` and ``originalText`` as A.5.1 requires):

==================  ============================================  ======
kind                EventID (EventTypeCode)                       action
==================  ============================================  ======
login, login-failed 110114 User Authentication (110122 Login)     E
logout              110114 User Authentication (110123 Logout)    E
association         110104 Instances Transferred when it stored   C
                    or retrieved (R), 110112 Query when it only
                    queried, 110113 Security Alert (110126 Node
                    Authentication) when refused; none otherwise
store               110104 DICOM Instances Transferred            C
study-sent          110104 DICOM Instances Transferred            R
retrieve            110103 DICOM Instances Accessed               R
query               110112 Query                                  E
study-deleted       110105 DICOM Study Deleted                    D
node-changed        110113 Security Alert (110128 Network Config) E
user-changed        110113 Security Alert (110136 Security Roles) E
api                 110113 Security Alert (110132 Restricted Fn)  E
application-*       110100 Application Activity (110120/110121)   E
==================  ============================================  ======
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from micropacs.ports import AuditRecord

DCM = "DCM"
RFC_3881 = "RFC-3881"


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1 CodedValueType)."""

    code: str
    system: str
    meaning: str


USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")
INSTANCES_TRANSFERRED = Code("110104", DCM, "DICOM Instances Transferred")
INSTANCES_ACCESSED = Code("110103", DCM, "DICOM Instances Accessed")
STUDY_DELETED = Code("110105", DCM, "DICOM Study Deleted")
QUERY = Code("110112", DCM, "Query")
SECURITY_ALERT = Code("110113", DCM, "Security Alert")
APPLICATION_ACTIVITY = Code("110100", DCM, "Application Activity")

LOGIN = Code("110122", DCM, "Login")
LOGOUT = Code("110123", DCM, "Logout")
APPLICATION_START = Code("110120", DCM, "Application Start")
APPLICATION_STOP = Code("110121", DCM, "Application Stop")
NODE_AUTHENTICATION = Code("110126", DCM, "Node Authentication")
NETWORK_CONFIGURATION = Code("110128", DCM, "Network Configuration")
RESTRICTED_FUNCTION = Code("110132", DCM, "Use of Restricted Function")
SECURITY_ROLES_CHANGED = Code("110136", DCM, "Security Roles Changed")

APPLICATION = Code("110150", DCM, "Application")
DESTINATION = Code("110152", DCM, "Destination Role ID")
SOURCE = Code("110153", DCM, "Source Role ID")

STUDY_INSTANCE_UID = Code("110180", DCM, "Study Instance UID")
PATIENT_NUMBER = Code("2", RFC_3881, "Patient Number")
APPLICATION_SERVER = Code("4", DCM, "Application Server")
"""AuditSourceTypeCode 4 (RFC 3881 5.4.3): an application server process."""

_STORES = {"C-STORE"}
_RETRIEVES = {"C-GET", "C-MOVE"}
_QUERIES = {"C-FIND"}


@dataclass(frozen=True)
class Source:
    """Who reports: this archive (AuditSourceID, and its ActiveParticipant)."""

    audit_source_id: str
    """Usually the AE title of the archive."""
    enterprise_site_id: str = ""
    address: str = ""
    """Where this archive listens (NetworkAccessPointID of its participant)."""


def _event_of(record: AuditRecord) -> tuple[Code, Code | None, str] | None:
    """EventID, EventTypeCode and EventActionCode of a record (None: nothing to export)."""
    ops = set(record.operations)
    match record.kind:
        case "login" | "login-failed":
            return USER_AUTHENTICATION, LOGIN, "E"
        case "logout":
            return USER_AUTHENTICATION, LOGOUT, "E"
        case "association":
            if record.outcome and not ops:
                return SECURITY_ALERT, NODE_AUTHENTICATION, "E"
            if ops & _STORES:
                return INSTANCES_TRANSFERRED, None, "C"
            if ops & _RETRIEVES:
                return INSTANCES_TRANSFERRED, None, "R"
            if ops & _QUERIES:
                return QUERY, None, "E"
            return None  # verification only: no patient data was touched
        case "store":
            return INSTANCES_TRANSFERRED, None, "C"
        case "study-sent":
            return INSTANCES_TRANSFERRED, None, "R"
        case "retrieve":
            return INSTANCES_ACCESSED, None, "R"
        case "query":
            return QUERY, None, "E"
        case "study-deleted":
            return STUDY_DELETED, None, "D"
        case "node-changed":
            return SECURITY_ALERT, NETWORK_CONFIGURATION, "E"
        case "user-changed":
            return SECURITY_ALERT, SECURITY_ROLES_CHANGED, "E"
        case "api":
            return SECURITY_ALERT, RESTRICTED_FUNCTION, "E"
        case "application-start":
            return APPLICATION_ACTIVITY, APPLICATION_START, "E"
        case "application-stop":
            return APPLICATION_ACTIVITY, APPLICATION_STOP, "E"
    return None


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent,
        tag,
        {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.meaning},
    )


def _access_point(attrs: dict[str, str], address: str) -> None:
    """NetworkAccessPointID and its type (1 machine name, 2 IP address; RFC 3881 5.3.2)."""
    if not address:
        return
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        kind = "2"
    except ValueError:
        kind = "1"
    attrs["NetworkAccessPointID"] = host
    attrs["NetworkAccessPointTypeCode"] = kind


def _participant(
    root: ET.Element, user_id: str, requestor: bool, address: str, role: Code | None
) -> None:
    attrs = {"UserID": user_id or "unknown", "UserIsRequestor": "true" if requestor else "false"}
    _access_point(attrs, address)
    participant = ET.SubElement(root, "ActiveParticipant", attrs)
    if role is not None:
        _coded(participant, "RoleIDCode", role)


def audit_message(record: AuditRecord, source: Source) -> bytes | None:
    """The PS3.15 A.5 AuditMessage of ``record`` as UTF-8 XML, or None for a record the
    repository has no message for (an association that only verified, C-ECHO)."""
    event = _event_of(record)
    if event is None:
        return None
    event_id, type_code, action = event
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": record.time,
            "EventOutcomeIndicator": str(record.outcome),
        },
    )
    _coded(identification, "EventID", event_id)
    if type_code is not None:
        _coded(identification, "EventTypeCode", type_code)
    if record.detail:
        ET.SubElement(identification, "EventOutcomeDescription").text = record.detail

    # The actor and this archive; for an association (and a received store) the actor is
    # the source of the transfer and we the destination, for a send the other way round.
    sending = record.kind == "study-sent" or (record.kind == "association" and action == "R")
    receiving = action == "C"
    actor_role = SOURCE if receiving else DESTINATION if sending else None
    own_role = DESTINATION if receiving else SOURCE if sending else APPLICATION
    _participant(root, record.actor, True, record.source, actor_role)
    own_id = record.destination or source.audit_source_id
    if record.kind == "study-sent":
        # The destination is the node sent to: a third participant, and we are the source.
        _participant(root, source.audit_source_id, False, source.address, SOURCE)
        _participant(root, record.destination, False, "", DESTINATION)
    else:
        _participant(root, own_id, False, source.address, own_role)

    attrs = {"AuditSourceID": source.audit_source_id}
    if source.enterprise_site_id:
        attrs["AuditEnterpriseSiteID"] = source.enterprise_site_id
    audit_source = ET.SubElement(root, "AuditSourceIdentification", attrs)
    _coded(audit_source, "AuditSourceTypeCode", APPLICATION_SERVER)

    for uid in record.study_uids:
        study = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": uid,
                "ParticipantObjectTypeCode": "2",  # system object
                "ParticipantObjectTypeCodeRole": "3",  # report
            },
        )
        _coded(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
        if event_id is QUERY:
            ET.SubElement(study, "ParticipantObjectQuery").text = base64.b64encode(
                record.detail.encode()
            ).decode()
    for patient_id in record.patient_ids:
        patient = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": patient_id,
                "ParticipantObjectTypeCode": "1",  # person
                "ParticipantObjectTypeCodeRole": "1",  # patient
            },
        )
        _coded(patient, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml
