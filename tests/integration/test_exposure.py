"""What a server exposes: no dataset values in its log lines (issue 10)."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import association

from tests.integration.peers import StudyRootQueryRetrieveInformationModelFind, associate, echo
from tests.integration.server import Server

MARKER = b"Sekr3t"


def test_an_identifier_that_fails_to_convert_is_logged_without_its_values(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Specific Character Set sent as FD with 6 bytes: pydicom's error quotes the bytes.
    identifier = (
        b"\x08\x00\x05\x00FD\x06\x00" + MARKER
        + b"\x08\x00\x52\x00CS\x06\x00STUDY "
        + b"\x10\x00\x10\x00PN\x00\x00"
    )  # fmt: skip
    monkeypatch.setattr(association, "encode", lambda *_args, **_kwargs: identifier)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(server, [(model, [ExplicitVRLittleEndian])])
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_find(query, model)]
    finally:
        assoc.release()
    assert statuses and statuses[-1] >= 0xA000  # a failure, not Success or Pending
    monkeypatch.undo()
    assert echo(server) == 0x0000
    log = server.log()
    assert "C-FIND failed" in log
    assert MARKER.decode() not in log
