"""Instance Availability Notifications (PS3.4 R) built in-process with their builder: the
quiet-period timer driven by the test's clock, the MPPS path, refusing and unreachable
destinations; the RIS is a real pynetdicom IAN SCP registered as a node."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid

from micropacs.config import IanSettings
from micropacs.ports import Node
from services.router.ian import Notifications, notifications_from_settings
from services.worklist.mpps import MPPS_SOP_CLASS
from tests import dicomdata
from tests.ianpeer import IanScp, Received, ian_scp
from tests.service.conftest import Running, wait_until
from tests.service.peers import associate, ct_files, store
from tests.worklistdata import in_progress

QUIET = 60.0
MPPS_UID_TAG = "ReferencedSOPInstanceUID"


class Clock:
    """The notifications' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    pacs: Running
    notifications: Notifications
    clock: Clock
    registry: CollectorRegistry
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def tick(self) -> None:
        """One look at the notices, and the sends it started, to their end."""
        self.pacs.loop_call(self.notifications.tick_and_wait())

    def tick_until(self, scp: IanScp, count: int, what: str) -> list[Received]:
        """Look until ``scp`` has received ``count`` notices (the index may still be
        committing what the catalog already answers)."""

        def received() -> list[Received]:
            self.tick()
            got = scp.notices()
            return got if len(got) >= count else []

        return wait_until(received, 15.0, what)

    def backlog(self) -> dict[str, int]:
        return self.pacs.loop_call(self.pacs.catalog.notice_backlog())

    def wait_backlog(self, expected: dict[str, int]) -> None:
        wait_until(lambda: self.backlog() == expected, 15.0, f"notices pending {expected}")

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def register(pacs: Running, ae_title: str, port: int) -> None:
    pacs.loop_call(pacs.catalog.put_node(Node(ae_title=ae_title, host="127.0.0.1", port=port)))


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_ian(pacs: Running) -> Iterator[Any]:
    started: list[Harness] = []

    def start(destinations: list[str], **own: Any) -> Harness:
        settings = pacs.settings.model_copy(
            update={
                "ian": IanSettings(
                    destinations=destinations, quiet_period=QUIET, check_interval=0.05, **own
                )
            }
        )
        clock = Clock()
        registry = CollectorRegistry()
        built = notifications_from_settings(
            settings, pacs.bus, pacs.catalog, pacs.worklist, registry, clock
        )
        assert built is not None

        async def spawn() -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
            stop = asyncio.Event()
            # The consumers run; the timer is the test's (Harness.tick).
            tasks = [
                asyncio.create_task(task(stop)) for task in (built.run_instances, built.run_steps)
            ]
            return stop, tasks

        stop, tasks = pacs.loop_call(spawn())
        harness = Harness(pacs, built, clock, registry, stop, tasks)
        started.append(harness)
        return harness

    yield start
    for harness in started:

        async def end(harness: Harness = harness) -> None:
            harness.stop.set()
            await asyncio.gather(*harness.tasks)

        pacs.loop_call(end())


def study_files(folder: Path, *counts: int) -> tuple[dicomdata.StudySpec, list[list[Path]]]:
    """A study of one series per count, each of that many CT slices."""
    study = dicomdata.StudySpec(accession_number="ACC-IAN-1", patient_id="PID-IAN")
    series = [
        ct_files(folder / f"s{number}", count, study=study, series=dicomdata.SeriesSpec())
        for number, count in enumerate(counts)
    ]
    return study, series


def sop_uids(files: list[Path]) -> list[str]:
    return [dcmread(path).SOPInstanceUID for path in files]


def referenced(notice: Received) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per series: (SOP Class, SOP Instance, availability, retrieve AE) of a notice."""
    return {
        str(series.SeriesInstanceUID): [
            (
                str(sop.ReferencedSOPClassUID),
                str(sop.ReferencedSOPInstanceUID),
                str(sop.InstanceAvailability),
                str(sop.RetrieveAETitle),
            )
            for sop in series.ReferencedSOPSequence
        ]
        for series in notice.attributes.ReferencedSeriesSequence
    }


def test_a_study_is_notified_once_quiet_and_again_when_more_arrives(
    pacs: Running, start_ian: Any, tmp_path: Path
) -> None:
    with ian_scp("RIS") as scp:
        register(pacs, "RIS", scp.port)
        ian = start_ian(["RIS"])
        study, (first, later) = study_files(tmp_path, 3, 2)
        assert store(pacs, *first) == [0, 0, 0]
        pacs.wait_indexed(sop_uids(first))
        ian.wait_backlog({"RIS": 1})
        ian.tick()
        ian.clock.now += QUIET - 1
        ian.tick()
        assert scp.notices() == []  # still within the quiet period

        ian.clock.now += 2
        [notice] = ian.tick_until(scp, 1, "the first notice")
        ds = notice.attributes
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.AccessionNumber == "ACC-IAN-1"
        assert ds.PatientID == "PID-IAN"
        assert ds.IssuerOfPatientID == study.issuer_of_patient_id
        assert list(ds.ReferencedPerformedProcedureStepSequence) == []
        series_uid = dcmread(first[0]).SeriesInstanceUID
        assert referenced(notice) == {
            series_uid: [(CTImageStorage, uid, "ONLINE", pacs.ae_title) for uid in sop_uids(first)]
        }
        assert notice.calling_ae == pacs.ae_title
        assert ian.backlog() == {}
        assert ian.metric("micropacs_router_ian_sent_total", destination="RIS") == 1

        # More of the study, later: a new notice, with everything the study now holds.
        assert store(pacs, *later) == [0, 0]
        pacs.wait_indexed(sop_uids(later))
        ian.wait_backlog({"RIS": 1})
        ian.tick()
        assert len(scp.notices()) == 1
        ian.clock.now += QUIET + 1
        again = ian.tick_until(scp, 2, "the second notice")[1]
        assert again.sop_instance_uid != notice.sop_instance_uid
        assert sorted(len(members) for members in referenced(again).values()) == [2, 3]


def _completed(series_uid: str, sop_uids: list[str]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20260301"
    ds.PerformedProcedureStepEndTime = "083000"
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.RetrieveAETitle = ""
    series.SeriesDescription = "head"
    series.PerformingPhysicianName = ""
    series.OperatorsName = ""
    series.ProtocolName = "head"
    images = []
    for uid in sop_uids:
        image = Dataset()
        image.ReferencedSOPClassUID = CTImageStorage
        image.ReferencedSOPInstanceUID = uid
        images.append(image)
    series.ReferencedImageSequence = Sequence(images)
    series.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def test_a_completed_mpps_is_notified_as_soon_as_its_images_are_indexed(
    pacs: Running, start_ian: Any, tmp_path: Path
) -> None:
    with ian_scp("RIS") as scp:
        register(pacs, "RIS", scp.port)
        ian = start_ian(["RIS"])
        study, (files,) = study_files(tmp_path, 3)
        uids = sop_uids(files)
        series_uid = dcmread(files[0]).SeriesInstanceUID
        mpps_uid = generate_uid()
        # The modality reports the step before it sends the images (dcm4chee's "MPPS
        # before store" case): nothing is notified until the catalog holds them all.
        with associate(pacs, [MPPS_SOP_CLASS], ae_title="CT01") as assoc:
            created, _ = assoc.send_n_create(
                in_progress(study=study.study_instance_uid), MPPS_SOP_CLASS, mpps_uid
            )
            assert created.Status == 0
            done, _ = assoc.send_n_set(_completed(series_uid, uids), MPPS_SOP_CLASS, mpps_uid)
            assert done.Status == 0
        ian.wait_backlog({"RIS": 1})
        ian.tick()
        assert scp.notices() == []
        assert store(pacs, *files[:2]) == [0, 0]
        pacs.wait_indexed(uids[:2])
        ian.tick()
        assert scp.notices() == []  # one referenced image is still missing
        assert store(pacs, files[2]) == [0]
        pacs.wait_indexed(uids)
        # No clock moved: the quiet period is not waited for once the step is complete.
        [notice] = ian.tick_until(scp, 1, "the step's notice")
        steps = notice.attributes.ReferencedPerformedProcedureStepSequence
        assert [(s.ReferencedSOPClassUID, s.ReferencedSOPInstanceUID) for s in steps] == [
            (MPPS_SOP_CLASS, mpps_uid)
        ]
        assert [uid for _, uid, _, _ in referenced(notice)[series_uid]] == uids
        assert ian.backlog() == {}


def test_a_refusing_or_unreachable_destination_delays_no_other(
    pacs: Running, start_ian: Any, tmp_path: Path
) -> None:
    processing_failure = 0x0110
    with ian_scp("RIS", status=processing_failure) as refusing, ian_scp("RIS2") as good:
        register(pacs, "RIS", refusing.port)
        register(pacs, "RIS2", good.port)
        register(pacs, "DOWN", free_port())
        ian = start_ian(["RIS", "DOWN", "RIS2"], max_attempts=2, backoff_initial=10.0)
        _, (files,) = study_files(tmp_path, 2)
        assert store(pacs, *files) == [0, 0]
        pacs.wait_indexed(sop_uids(files))
        ian.wait_backlog({"DOWN": 1, "RIS": 1, "RIS2": 1})
        ian.clock.now += QUIET + 1
        ian.tick_until(good, 1, "the notice of the destination that takes it")
        wait_until(lambda: refusing.notices(), 15.0, "the refused attempt")
        assert ian.backlog() == {"DOWN": 1, "RIS": 1}
        assert ian.metric("micropacs_router_ian_sent_total", destination="RIS2") == 1
        assert (
            ian.metric("micropacs_router_ian_failed_total", destination="RIS", reason="refused")
            == 1
        )
        assert (
            ian.metric(
                "micropacs_router_ian_failed_total", destination="DOWN", reason="unreachable"
            )
            == 1
        )

        # Retried after the backoff (at most backoff_initial): the second refusal is the last.
        ian.clock.now += 10.0
        ian.tick_until(refusing, 2, "the second attempt")
        wait_until(lambda: ian.backlog() == {}, 15.0, "every notice settled")
        first, second = refusing.notices()
        assert first.sop_instance_uid == second.sop_instance_uid  # one notice, tried twice
        assert ian.metric("micropacs_router_ian_abandoned_total", destination="RIS") == 1
        assert ian.metric("micropacs_router_ian_abandoned_total", destination="DOWN") == 1
        assert len(good.notices()) == 1
