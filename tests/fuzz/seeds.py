"""Valid inputs to mutate: PDUs, DIMSE messages and C-FIND identifiers as peers send them.

Every seed is built with pynetdicom's and pydicom's own encoders, so it is
what a real modality or workstation puts on the wire (PS3.8 9.3, PS3.7 E).
"""

from __future__ import annotations

from io import BytesIO

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
MAX_PDU = 16384


def association_primitive(called_ae: str, calling_ae: str = "FUZZER") -> A_ASSOCIATE:
    """An A-ASSOCIATE request proposing Verification, C-FIND and C-GET, with the user
    information items a workstation sends (PS3.7 D.3.3)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "FUZZ_304"
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 1
    window.maximum_number_operations_performed = 1
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CT_IMAGE
    role.scu_role, role.scp_role = False, True
    primitive.user_information = [maximum, implementation, version, window, role]
    contexts = []
    for number, sop_class in enumerate((VERIFICATION, STUDY_ROOT_FIND, STUDY_ROOT_GET, CT_IMAGE)):
        context = build_context(sop_class, [EXPLICIT, IMPLICIT])
        context.context_id = 2 * number + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    return primitive


def association_request(called_ae: str, calling_ae: str = "FUZZER") -> bytes:
    """The A-ASSOCIATE-RQ PDU of :func:`association_primitive` (PS3.8 9.3.2)."""
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(association_primitive(called_ae, calling_ae))
    return bytes(pdu.encode())


def _with_user_identity(called_ae: str) -> bytes:
    primitive = association_primitive(called_ae)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.positive_response_requested = True
    identity.primary_field = b"fuzzer"
    identity.secondary_field = b"not a password"
    primitive.user_information.append(identity)
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _answers(called_ae: str) -> list[bytes]:
    """The A-ASSOCIATE-AC and -RJ an SCP sends back (micropacs receives them on C-MOVE)."""
    primitive = association_primitive(called_ae)
    primitive.result = 0x00
    for context in primitive.presentation_context_definition_list:
        context.result = 0x00
        context.transfer_syntax = [EXPLICIT]
    primitive.presentation_context_definition_results_list = (
        primitive.presentation_context_definition_list
    )
    accept = A_ASSOCIATE_AC()
    accept.from_primitive(primitive)
    reject_primitive = association_primitive(called_ae)
    reject_primitive.result, reject_primitive.result_source, reject_primitive.diagnostic = 1, 1, 7
    reject = A_ASSOCIATE_RJ()
    reject.from_primitive(reject_primitive)
    return [bytes(accept.encode()), bytes(reject.encode())]


def find_identifier() -> Dataset:
    """A study-level C-FIND identifier with wildcard, range, list and sequence keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Fuzz*^Te?t"
    ds.PatientID = ""
    ds.StudyDate = "20200101-20251231"
    ds.StudyTime = "-1015"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.StudyInstanceUID = ["1.2.3.4", "1.2.3.5"]
    ds.StudyDescription = "*Brain*"
    ds.AccessionNumber = "A?"
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodingSchemeDesignator = "SRT"
    ds.ProcedureCodeSequence = [item]
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def encoded(ds: Dataset, implicit: bool) -> bytes:
    """``ds`` encoded as a DIMSE message's data set (little endian, PS3.5 7)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def _messages() -> list[DIMSEMessage]:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = VERIFICATION
    echo_message = C_ECHO_RQ()
    echo_message.primitive_to_message(echo)
    find = C_FIND()
    find.MessageID = 2
    find.AffectedSOPClassUID = STUDY_ROOT_FIND
    find.Priority = 2
    find.Identifier = BytesIO(encoded(find_identifier(), implicit=False))
    find_message = C_FIND_RQ()
    find_message.primitive_to_message(find)
    stored = find_identifier()
    stored.SOPClassUID, stored.SOPInstanceUID = CT_IMAGE, "1.2.826.0.1.3680043.9.3811.1"
    store = C_STORE()
    store.MessageID = 3
    store.AffectedSOPClassUID = CT_IMAGE
    store.AffectedSOPInstanceUID = stored.SOPInstanceUID
    store.Priority = 2
    store.DataSet = BytesIO(encoded(stored, implicit=False))
    store_message = C_STORE_RQ()
    store_message.primitive_to_message(store)
    return [echo_message, find_message, store_message]


CONTEXT_IDS = (1, 3, 7)
"""The presentation contexts of :func:`association_primitive` the messages go on."""


def p_data_pdus(max_pdu: int = MAX_PDU) -> list[bytes]:
    """P-DATA-TF PDUs of a C-ECHO-RQ (context 1), a C-FIND-RQ with its identifier
    (context 3) and a C-STORE-RQ with its data set (context 7), fragmented as
    pynetdicom sends them (PS3.8 9.3.5, PS3.7 E.2)."""
    pdus = []
    for message, context_id in zip(_messages(), CONTEXT_IDS, strict=True):
        for primitive in message.encode_msg(context_id, max_pdu):
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            pdus.append(bytes(pdu.encode()))
    return pdus


def fragments() -> list[list[tuple[int, bytes]]]:
    """The presentation data values of each message of :func:`p_data_pdus`: what the
    DIMSE provider decodes (context ID, message control header and fragment)."""
    messages = []
    for message, context_id in zip(_messages(), CONTEXT_IDS, strict=True):
        values: list[tuple[int, bytes]] = []
        for primitive in message.encode_msg(context_id, MAX_PDU):
            values += [(int(c), bytes(d)) for c, d in primitive.presentation_data_value_list]
        messages.append(values)
    return messages


def pdus(called_ae: str) -> list[bytes]:
    """One PDU of every type, as a peer sends them."""
    release_rq, release_rp, abort = A_RELEASE_RQ(), A_RELEASE_RP(), A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x00, 0x00
    return [
        association_request(called_ae),
        _with_user_identity(called_ae),
        *_answers(called_ae),
        *p_data_pdus(),
        bytes(release_rq.encode()),
        bytes(release_rp.encode()),
        bytes(abort.encode()),
    ]
