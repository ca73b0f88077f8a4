"""Storage Commitment Push Model SCP (PS3.4 J), in process: N-ACTION by a pynetdicom SCU, the
N-EVENT-REPORT received by the requestor's own pynetdicom SCP on a second association.

Every path: instances committed, missing, corrupted on disk and named with another
SOP class; a request right after its C-STOREs (the read barrier); callers refused;
malformed requests answered with a failure status; a report retried until the
requestor listens, carried over a restart of the background tasks, and given up
after the maximum age.
"""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from micropacs.adapters.files import FileBlobStore
from micropacs.dicom.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH
from micropacs.events import COMMITMENT, DEAD_LETTER
from micropacs.ports import Node
from tests.service import peers
from tests.service.conftest import Running, StartPacs, wait_until

REQUESTOR = "MODALITY1"
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS, NOT_AUTHORIZED = 0x0000, 0x0124
NO_SUCH_ACTION, INVALID_ARGUMENT, NO_SUCH_INSTANCE = 0x0123, 0x0115, 0x0112
PROCESSING_FAILURE, NO_SUCH_OBJECT, CLASS_INSTANCE_CONFLICT = 0x0110, 0x0112, 0x0119
FAST = {"poll_interval": 0.05, "retry_initial": 0.05, "retry_max": 0.2}


@dataclass(frozen=True)
class Report:
    """An N-EVENT-REPORT the requestor received."""

    event_type: int
    calling_ae: str
    information: Dataset

    @property
    def transaction_uid(self) -> str:
        return str(self.information.TransactionUID)

    def committed(self) -> set[str]:
        return {
            str(item.ReferencedSOPInstanceUID)
            for item in self.information.get("ReferencedSOPSequence", [])
        }

    def failed(self) -> dict[str, int]:
        return {
            str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
            for item in self.information.get("FailedSOPSequence", [])
        }


@contextmanager
def requestor_scp() -> Iterator[tuple[int, queue.Queue[Report]]]:
    """The modality's Storage Commitment SCU, listening for reports on a free port."""
    received: queue.Queue[Report] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        received.put(
            Report(
                int(event.event_type or 0),
                str(event.assoc.requestor.ae_title).strip(),
                event.event_information,
            )
        )
        return SUCCESS, None  # no Event Reply (PS3.4 J.3.3.2)

    ae = AE(ae_title=REQUESTOR)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peers.TIMEOUT
    # The archive proposes the SCP role; the requestor takes the SCU role (PS3.4 J.3.3).
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    assert isinstance(server, ThreadedAssociationServer)
    try:
        yield int(server.server_address[1]), received
    finally:
        associations = ae.active_associations
        ae.shutdown()
        for association in associations:
            association.join(peers.TIMEOUT)


@contextmanager
def port_nobody_listens_on() -> Iterator[int]:
    """A port bound (so no one else takes it) but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def register(pacs: Running, port: int, **rights: Any) -> None:
    pacs.loop_call(pacs.catalog.put_node(Node(REQUESTOR, "127.0.0.1", port, **rights)))


def request(
    references: Sequence[tuple[str, str]],
    transaction_uid: str | None = None,
) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid or generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def n_action(
    pacs: Running,
    information: Dataset,
    *,
    ae_title: str = REQUESTOR,
    action_type: int = 1,
    instance_uid: str = STORAGE_COMMITMENT_INSTANCE,
) -> int:
    """The status of an N-ACTION; the association still answers a C-ECHO after it."""
    contexts = [STORAGE_COMMITMENT_PUSH, VERIFICATION]
    with peers.associate(pacs, contexts, ae_title=ae_title) as assoc:
        status, _ = assoc.send_n_action(
            information, action_type, STORAGE_COMMITMENT_PUSH, instance_uid
        )
        assert int(assoc.send_c_echo().Status) == SUCCESS
    return int(status.Status)


def stored(pacs: Running, folder: Path, n: int) -> list[Dataset]:
    files = peers.ct_files(folder, n)
    assert peers.store(pacs, *files) == [SUCCESS] * n
    return [dcmread(path, stop_before_pixels=True) for path in files]


def next_report(received: queue.Queue[Report], timeout: float = 15.0) -> Report:
    return received.get(timeout=timeout)


def answered(pacs: Running, count: int = 1) -> None:
    """Wait until micropacs has the requestor's answer to its report: the requestor's SCP
    must not shut down between taking the report and answering it."""
    wait_until(
        lambda: (
            pacs.metric("micropacs_router_commitment_reports_total", outcome="delivered") >= count
        ),
        what="the report answered",
    )


def corrupt(pacs: Running, sop_instance_uid: str) -> None:
    """Change one byte of the stored object, on disk, after it was stored and indexed."""
    (location,) = pacs.wait_indexed([sop_instance_uid])
    assert isinstance(pacs.blobs, FileBlobStore)
    path = pacs.blobs.path_of(location.object_key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def fast_pacs(start_pacs: StartPacs) -> Running:
    return start_pacs(commitment=FAST)


def test_stored_missing_corrupted_and_conflicting_instances(
    fast_pacs: Running, tmp_path: Path
) -> None:
    pacs = fast_pacs
    with requestor_scp() as (port, received):
        register(pacs, port)
        good, corrupted, other_class = stored(pacs, tmp_path / "ct", 3)
        corrupt(pacs, corrupted.SOPInstanceUID)
        missing = generate_uid()
        information = request(
            [
                (CTImageStorage, good.SOPInstanceUID),
                (CTImageStorage, corrupted.SOPInstanceUID),
                (CTImageStorage, missing),
                (MRImageStorage, other_class.SOPInstanceUID),
            ]
        )

        assert n_action(pacs, information) == SUCCESS
        report = next_report(received)
        answered(pacs)

    assert report.event_type == 2
    assert report.transaction_uid == information.TransactionUID
    assert report.calling_ae == pacs.ae_title
    assert report.committed() == {good.SOPInstanceUID}
    assert report.failed() == {
        corrupted.SOPInstanceUID: PROCESSING_FAILURE,
        missing: NO_SUCH_OBJECT,
        other_class.SOPInstanceUID: CLASS_INSTANCE_CONFLICT,
    }
    assert report.information.RetrieveAETitle == pacs.ae_title
    assert pacs.metric("micropacs_router_commitment_requests_total", status="0x0000") == 1
    instances = "micropacs_router_commitment_instances_total"
    assert pacs.metric(instances, result="committed") == 1
    assert pacs.metric(instances, result="0x0110") == 1
    assert pacs.metric(instances, result="0x0112") == 1
    assert pacs.metric(instances, result="0x0119") == 1
    assert pacs.metric("micropacs_router_commitment_reports_total", outcome="delivered") == 1


def test_a_request_right_after_its_stores_commits_them_all(
    fast_pacs: Running, tmp_path: Path
) -> None:
    pacs = fast_pacs
    with requestor_scp() as (port, received):
        register(pacs, port)
        sent = stored(pacs, tmp_path / "ct", 4)  # not waited for: the read barrier does
        information = request([(CTImageStorage, ds.SOPInstanceUID) for ds in sent])

        assert n_action(pacs, information) == SUCCESS
        report = next_report(received)
        answered(pacs)

    assert report.event_type == 1
    assert report.committed() == {ds.SOPInstanceUID for ds in sent}
    assert "FailedSOPSequence" not in report.information


def test_callers_that_are_no_registered_node_allowed_to_store_are_refused(
    fast_pacs: Running, tmp_path: Path
) -> None:
    pacs = fast_pacs
    register(pacs, 104, store=False)  # before the first association reads the registry
    (ds,) = stored(pacs, tmp_path / "ct", 1)
    information = request([(CTImageStorage, ds.SOPInstanceUID)])

    assert n_action(pacs, information, ae_title="STRANGER") == NOT_AUTHORIZED
    assert n_action(pacs, information) == NOT_AUTHORIZED  # registered without --no-store

    assert pacs.published(COMMITMENT) == []
    assert pacs.metric("micropacs_router_commitment_requests_total", status="0x0124") == 2


def test_malformed_requests_get_a_failure_status(fast_pacs: Running, tmp_path: Path) -> None:
    pacs = fast_pacs
    register(pacs, 104)
    (ds,) = stored(pacs, tmp_path / "ct", 1)
    good = request([(CTImageStorage, ds.SOPInstanceUID)])
    no_transaction = request([(CTImageStorage, ds.SOPInstanceUID)])
    del no_transaction.TransactionUID
    empty_transaction = request([(CTImageStorage, ds.SOPInstanceUID)])
    empty_transaction.TransactionUID = ""
    empty = request([])
    bad_item = request([(CTImageStorage, "")])
    no_sequence = Dataset()
    no_sequence.TransactionUID = generate_uid()

    assert n_action(pacs, good, action_type=2) == NO_SUCH_ACTION
    assert n_action(pacs, good, instance_uid=generate_uid()) == NO_SUCH_INSTANCE
    for information in (no_transaction, empty_transaction, empty, bad_item, no_sequence):
        assert n_action(pacs, information) == INVALID_ARGUMENT

    assert pacs.published(COMMITMENT) == []
    assert pacs.background_failure() is None


def test_too_many_references_are_a_resource_limitation(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(commitment={**FAST, "max_references": 2})
    register(pacs, 104)
    references = [(CTImageStorage, generate_uid()) for _ in range(3)]

    assert n_action(pacs, request(references)) == 0x0213
    assert pacs.published(COMMITMENT) == []


def test_a_report_is_retried_until_the_requestor_listens(
    fast_pacs: Running, tmp_path: Path
) -> None:
    pacs = fast_pacs
    failures = "micropacs_router_commitment_report_failures_total"
    with port_nobody_listens_on() as closed, requestor_scp() as (port, received):
        register(pacs, closed)
        (ds,) = stored(pacs, tmp_path / "ct", 1)
        information = request([(CTImageStorage, ds.SOPInstanceUID)])
        assert n_action(pacs, information) == SUCCESS
        wait_until(lambda: pacs.metric(failures) >= 2, what="two failed attempts")

        register(pacs, port)  # the address is read again at each attempt
        report = next_report(received)
        answered(pacs)

    assert (report.event_type, report.committed()) == (1, {ds.SOPInstanceUID})


def test_a_pending_request_is_reported_after_a_restart(fast_pacs: Running, tmp_path: Path) -> None:
    pacs = fast_pacs
    failures = "micropacs_router_commitment_report_failures_total"
    group = pacs.settings.commitment.group
    with port_nobody_listens_on() as closed, requestor_scp() as (port, received):
        register(pacs, closed)
        (ds,) = stored(pacs, tmp_path / "ct", 1)
        information = request([(CTImageStorage, ds.SOPInstanceUID)])
        assert n_action(pacs, information) == SUCCESS
        wait_until(lambda: pacs.metric(failures) >= 1, what="a failed attempt")

        pacs.stop_background()  # the router stops before its report got through
        assert len(pacs.uncommitted(COMMITMENT, group)) == 1
        assert received.empty()
        register(pacs, port)
        pacs.start_background()
        report = next_report(received)
        answered(pacs)

    assert report.transaction_uid == information.TransactionUID
    assert report.committed() == {ds.SOPInstanceUID}
    wait_until(lambda: all_committed(pacs), what="the request's offset committed")


def all_committed(pacs: Running) -> bool:
    """Whether the reporter's group has committed every commitment request published."""
    group = pacs.settings.commitment.group
    ends = pacs.loop_call(pacs.bus.end_offsets([COMMITMENT]))
    committed = pacs.loop_call(pacs.bus.committed_offsets(group, [COMMITMENT]))
    return all(committed.get(key, 0) >= end for key, end in ends.items())


def test_a_report_nobody_answers_is_given_up_after_the_maximum_age(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(commitment={**FAST, "max_age": 0.5})
    given_up = "micropacs_router_commitment_reports_total"
    with port_nobody_listens_on() as closed:
        register(pacs, closed)
        assert n_action(pacs, request([(CTImageStorage, generate_uid())])) == SUCCESS
        wait_until(lambda: pacs.metric(given_up, outcome="given_up") == 1, what="given up")

    wait_until(lambda: all_committed(pacs), what="the given-up request's offset committed")
    assert pacs.metric("micropacs_router_commitment_report_failures_total") >= 1


def test_an_event_that_cannot_be_decoded_is_dead_lettered(fast_pacs: Running) -> None:
    pacs = fast_pacs
    pacs.loop_call(pacs.bus.publish(COMMITMENT, "k", b'{"type": "commitment.requested"}'))

    (letter,) = wait_until(lambda: pacs.published(DEAD_LETTER), what="a dead letter")

    body = json.loads(letter.value)
    assert (body["source_topic"], body["consumer_group"]) == (COMMITMENT, "commitment")
    wait_until(lambda: all_committed(pacs), what="the bad event's offset committed")
    assert pacs.background_failure() is None
