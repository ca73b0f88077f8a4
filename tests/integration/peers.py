"""Real DICOM peers for tests: DCMTK's tools as subprocesses, and pynetdicom as SCU."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from tests import dicomdata
from tests.integration.server import Server

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

# SOP classes (PS3.4 A.4, C.6): pynetdicom defines its names at run time, unseen by mypy.
Verification = "1.2.840.10008.1.1"
PatientRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.1.1"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the ephemeral range (32768-60999 on Linux), so no
    outgoing connection takes it between now and the moment a server binds it."""
    while True:
        port = random.randrange(20000, 32700)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``process`` listens on the loopback ``port`` (or fail if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the peer exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def dcmtk(
    tool: str, *args: str, timeout: float = 300, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; DCMTK leaves Nagle on unless TCP_NODELAY=1 is set."""
    result = subprocess.run(
        [tool, *args], capture_output=True, text=True, env=DCMTK_ENV, timeout=timeout, cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def storescu(
    server: Server, files: Sequence[Path], *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Send files with storescu, one association per transfer syntax, proposing that syntax
    so every file arrives as it is (storescu otherwise converts to uncompressed)."""
    result = None
    for syntax, group in dicomdata.by_transfer_syntax(files).items():
        proposal = dicomdata.STORESCU_PROPOSAL.get(syntax, "-xe")
        result = dcmtk(
            "storescu",
            "-aec",
            server.ae_title,
            "-aet",
            "STORESCU",
            proposal,
            *extra,
            server.host,
            str(server.dicom_port),
            *map(str, group),
            check=check,
        )
    assert result is not None, "no files to send"
    return result


def keys(identifier: dict[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in identifier.items():
        args += ["-k", f"{key}={value}" if value is not None else key]
    return args


def findscu(
    server: Server, identifier: dict[str, str], out: Path, *, root: str = "-S"
) -> list[Dataset]:
    """C-FIND with DCMTK's findscu; returns the responses it extracted."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    dcmtk(
        "findscu",
        root,
        "-aec",
        server.ae_title,
        "-X",
        "-od",
        str(out),
        *keys(identifier),
        server.host,
        str(server.dicom_port),
    )
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def associate(
    server: Server, contexts: Iterable[Any], *, dimse_timeout: float = 30, **kwargs: Any
) -> Any:
    ae = AE(ae_title="PYSCU")
    ae.dimse_timeout = dimse_timeout
    for cx in contexts:
        if isinstance(cx, tuple):
            ae.add_requested_context(*cx)
        else:
            ae.add_requested_context(cx)
    assoc = ae.associate(server.host, server.dicom_port, ae_title=server.ae_title, **kwargs)
    assert assoc.is_established, "association with micropacs was not established"
    return assoc


Rejection = tuple[int, int, int]
"""An A-ASSOCIATE-RJ's (result, source, diagnostic) (PS3.8 9.3.4)."""


def associate_or_rejection(
    ae: AE, host: str, port: int, **kwargs: Any
) -> tuple[Any, Rejection | None]:
    """``ae.associate(host, port, **kwargs)``, and the A-ASSOCIATE-RJ it received, if any.

    The rejection is read from the PDU as it arrived, never from ``assoc.is_rejected``:
    pynetdicom 3.0.4's requestor thread waits for the connection while the reactor
    thread connects, sends the A-ASSOCIATE-RQ, receives the RJ and closes the socket
    (AE-4); when the reactor gets that far before the requestor thread looks, the
    closed socket reads as a failed connection and the requestor aborts, the RJ unread
    (``is_aborted``, ``acceptor.primitive`` None: 1 to 3 rejections in 100 under load).
    """
    received: list[Rejection] = []

    def keep(event: evt.Event) -> None:
        pdu = getattr(event, "pdu", None)
        if isinstance(pdu, A_ASSOCIATE_RJ):
            rj: Any = pdu  # its fields are typed Optional: they are set once decoded
            received.append((int(rj.result), int(rj.source), int(rj.reason_diagnostic)))

    handlers = [*(kwargs.pop("evt_handlers", None) or []), (evt.EVT_PDU_RECV, keep)]
    assoc = ae.associate(host, port, evt_handlers=handlers, **kwargs)
    assert not (received and assoc.is_established)
    return assoc, received[0] if received else None


FIND_TIMEOUT = 120
"""Seconds a test's C-FIND waits for each response."""


def pyfind(
    server: Server, identifier: Dataset, *, patient_root: bool = False
) -> tuple[list[Dataset], int]:
    """C-FIND with pynetdicom; returns the matches and the final status."""
    model = (
        PatientRootQueryRetrieveInformationModelFind
        if patient_root
        else StudyRootQueryRetrieveInformationModelFind
    )
    # A workstation's patience, not pynetdicom's 30 s: a loaded CI machine running the
    # stack's servers beside the test has taken longer than that to answer.
    assoc = associate(server, [model], dimse_timeout=FIND_TIMEOUT)
    try:
        matches: list[Dataset] = []
        final = -1
        for status, found in assoc.send_c_find(identifier, model):
            # On a timeout or an abort pynetdicom yields an empty status Dataset.
            if status is None or "Status" not in status:
                raise AssertionError("C-FIND timed out or aborted")
            if status.Status in (0xFF00, 0xFF01):
                matches.append(found)
            else:
                final = int(status.Status)
        return matches, final
    finally:
        assoc.release()


def study_identifier(**values: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def find_matches(server: Server, level: str, **match: Any) -> list[Dataset]:
    """One C-FIND at ``level`` for ``match``, with the level's unique keys returned."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = ""
    for key, value in match.items():
        setattr(ds, key, value)
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
    found, status = pyfind(server, ds)
    assert status == 0x0000, f"C-FIND ended with 0x{status:04X}"
    return found


def find_stored(server: Server, level: str, expected: int, **match: Any) -> list[Dataset]:
    """The ``expected`` matches of one C-FIND issued at once: what was acknowledged before
    it, the query finds (the read barrier), with no waiting here."""
    found = find_matches(server, level, **match)
    assert len(found) == expected, f"{len(found)} {level} matches, not {expected}"
    return found


def find_every_stored(server: Server, files: Sequence[Path]) -> None:
    """One C-FIND per study of ``files``, issued at once, finds every one of them (the
    archive may hold other instances too)."""
    by_study: dict[str, set[str]] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        by_study.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
    for study, sops in by_study.items():
        found = {
            str(m.SOPInstanceUID) for m in find_matches(server, "IMAGE", StudyInstanceUID=study)
        }
        assert sops <= found, f"{len(sops - found)} of {len(sops)} stored instances not found"


def wait_indexed(
    server: Server, level: str, expected: int, timeout: float = 60, **match: Any
) -> list[Dataset]:
    """Poll C-FIND until ``expected`` matches appear: only for an index that restarts
    behind (after a crash), where catching up may take longer than the read barrier's bound."""
    deadline = time.monotonic() + timeout
    found: list[Dataset] = []
    while time.monotonic() < deadline:
        found = find_matches(server, level, **match)
        if len(found) >= expected:
            return found
        time.sleep(0.2)
    raise AssertionError(f"only {len(found)} of {expected} {level} matches after {timeout}s")


def echo(server: Server) -> int:
    assoc = associate(server, [Verification])
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def sent_bytes(event: evt.Event) -> bytes:
    """The encoded data set of a received C-STORE, as sent, whether pynetdicom kept it in
    memory or (``STORE_RECV_CHUNKED_DATASET``, which micropacs sets process-wide) in a file."""
    path = getattr(event.request, "_dataset_path", None)
    if path is None:
        return event.encoded_dataset(include_meta=False)
    data = Path(path).read_bytes()
    meta = dcmread(path, stop_before_pixels=True).file_meta
    return data[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def pyget(
    server: Server,
    identifier: Dataset,
    sop_classes: Sequence[str],
    syntaxes: Sequence[str] | None = None,
) -> tuple[list[Dataset], int]:
    """C-GET with pynetdicom, offering the SCP role for ``sop_classes``."""
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.encoded = sent_bytes(event)
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []
    for sop_class in sop_classes:
        if syntaxes:
            ae.add_requested_context(sop_class, list(syntaxes))
        else:
            ae.add_requested_context(sop_class)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(
        server.host,
        server.dicom_port,
        ae_title=server.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    final = -1
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if status is None:
                raise AssertionError("C-GET timed out or aborted")
            if status.Status not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return received, final


def association_request(
    called_ae: str, calling_ae: str = "ANYONE", *, contexts: Sequence[str] = (Verification,)
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (PS3.8 9.3.2), as raw bytes to send."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    primitive.user_information = [maximum]
    proposed = []
    for number, sop_class in enumerate(contexts):
        context = build_context(sop_class)
        context.context_id = 2 * number + 1
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())
