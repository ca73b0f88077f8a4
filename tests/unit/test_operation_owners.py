"""Which service answers a DIMSE request: by operation, and by SOP class where several do."""

from __future__ import annotations

import dataclasses

import pytest

from micropacs.service import ServiceDescriptor, operation_owners
from micropacs.service_list import SERVICES

MWL_FIND = "1.2.840.10008.5.1.4.31"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MPPS = "1.2.840.10008.3.1.2.3.3"


def test_c_find_goes_to_the_worklist_for_its_model_and_to_qr_for_the_others() -> None:
    owners = operation_owners(SERVICES)
    assert owners.owner("C-FIND", MWL_FIND) == "worklist"
    assert owners.owner("C-FIND", STUDY_ROOT_FIND) == "qr"
    assert owners.owner("C-STORE", "1.2.840.10008.5.1.4.1.1.2") == "ingest"
    assert owners.owner("N-CREATE", MPPS) == "worklist"
    assert owners.owner("N-ACTION", MPPS) is None


def test_c_echo_counts_for_the_first_service_on_the_listener() -> None:
    """The listener answers C-ECHO itself (micropacs.dimse.verification); its metrics name
    the first DICOM service of the process, and a process without one has none."""
    by_name = {service.name: service for service in SERVICES}
    assert operation_owners(SERVICES).owner("C-ECHO", "1.2.840.10008.1.1") == "ingest"
    assert operation_owners([by_name["router"]]).owner("C-ECHO") == "router"
    assert operation_owners([by_name["index"], by_name["worklist"]]).owner("C-ECHO") == "worklist"
    assert operation_owners([by_name["index"], by_name["admin"]]).owner("C-ECHO") is None


def test_two_services_claiming_one_operation_and_class_are_refused() -> None:
    def service(name: str) -> ServiceDescriptor:
        return ServiceDescriptor(
            name=name,
            summary="",
            needs=frozenset(),
            build=SERVICES[0].build,
            operations=("C-FIND",),
            sop_classes={"C-FIND": frozenset({MWL_FIND})},
        )

    with pytest.raises(ValueError, match="both answer"):
        operation_owners([service("a"), service("b")])
    with pytest.raises(ValueError, match="both answer"):
        # Two answering C-FIND for every class nobody claims (qr and a copy of it).
        qr = next(s for s in SERVICES if s.name == "qr")
        operation_owners([qr, dataclasses.replace(qr, name="copy")])
