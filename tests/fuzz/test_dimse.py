"""Fuzzing DIMSE message decoding (PS3.7 E, PS3.8 E) and the C-FIND identifier path.

- The presentation data values of P-DATA are assembled into a DIMSE message
  by pynetdicom in the association's reactor thread; a message that cannot
  be decoded must end the association (an A-ABORT), never the thread.
- A C-FIND identifier is decoded by pydicom when the handler first reads it
  (it may raise: the handler answers a failure status), turned into DICOM
  JSON by :func:`~micropacs.dicom.json_model.to_json` (never raises) and
  matched by the :class:`~services.qr.query_service.QueryService` against a
  real SQLite catalog (returns matches, or raises a
  :class:`~micropacs.errors.MicropacsError` that maps to a status).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import build_context

from micropacs.dicom.json_model import to_json
from micropacs.dimse.ae import configure_pynetdicom
from micropacs.errors import MicropacsError
from tests.fuzz import seeds
from tests.fuzz.conftest import fuzz
from tests.fuzz.mutation import inputs, mutated
from tests.service.conftest import Running
from tests.service.peers import ct_files, store

# ---------------------------------------------------------------- DIMSE messages

FRAGMENTS = seeds.fragments()
SEED_VALUES = [data for message in FRAGMENTS for _, data in message]
CONTROL_HEADERS = st.sampled_from((0x00, 0x01, 0x02, 0x03)) | st.integers(0, 255)


@st.composite
def presentation_data_values(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """A seed message with one fragment mutated, or random values with random headers."""
    if draw(st.booleans()):
        message = list(draw(st.sampled_from(FRAGMENTS)))
        at = draw(st.integers(0, len(message) - 1))
        context_id, data = message[at]
        mutated_data = draw(mutated([data]))
        message[at] = (context_id, mutated_data)
        return message
    values = draw(
        st.lists(
            st.tuples(
                st.sampled_from(seeds.CONTEXT_IDS) | st.integers(0, 255),
                st.tuples(CONTROL_HEADERS, inputs(SEED_VALUES, 128)).map(
                    lambda pair: bytes([pair[0]]) + pair[1][1:]
                )
                | st.binary(max_size=2),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return [(int(c), bytes(d)) for c, d in values]


def acceptor() -> Association:
    """An association as micropacs accepts one, with the seeds' contexts accepted (not
    started: its DIMSE provider is called directly, as the state machine calls it)."""
    configure_pynetdicom()
    association = Association(AE(ae_title="MICROPACS"), "acceptor")
    for context_id, sop_class in zip(
        seeds.CONTEXT_IDS, (seeds.VERIFICATION, seeds.STUDY_ROOT_FIND, seeds.CT_IMAGE), strict=True
    ):
        context = build_context(sop_class, [seeds.EXPLICIT])
        context.context_id, context.result = context_id, 0x00
        association._accepted_cx[context_id] = context
    return association


def test_dimse_messages_decode_or_abort_the_association(tmp_path: Path) -> None:
    received = tmp_path / "received"
    received.mkdir()
    previous, tempfile.tempdir = tempfile.tempdir, str(received)
    association = acceptor()
    dimse, events = association.dimse, association.dul.event_queue

    def reset() -> None:
        """A new association for the next input: no message in progress, no files."""
        pending, dimse.message = dimse.message, None
        if pending is not None and pending._data_set_file is not None:
            pending._data_set_file.close()
        for queued in (events, dimse.msg_queue):
            while not queued.empty():
                queued.get_nowait()
        for path in received.iterdir():
            path.unlink()  # a C-STORE data set received or in progress: the handler's

    def check(values: list[tuple[int, bytes]]) -> None:
        reset()
        primitive = P_DATA()
        # pynetdicom checks for [int, bytes] lists at run time, though typed as tuples
        primitive.presentation_data_value_list = cast(Any, [[c, d] for c, d in values])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # in a server they are logged, not raised
            dimse.receive_primitive(primitive)  # in the reactor thread: must not raise
        aborted = False
        while not events.empty():
            assert events.get_nowait() == "Evt19"
            aborted = True
        if aborted:
            assert list(received.iterdir()) == [], "an undecodable message left its file"

    try:
        fuzz("dimse message decode", presentation_data_values(), check, weight=2)
    finally:
        reset()
        tempfile.tempdir = previous


# ------------------------------------------------------------ C-FIND identifiers

IDENTIFIER_SEEDS = [seeds.encoded(seeds.find_identifier(), implicit) for implicit in (True, False)]


@pytest.fixture(scope="module")
def populated(fuzz_pacs: Running, tmp_path_factory: pytest.TempPathFactory) -> Running:
    """The module's PACS holding a few CT instances, so that queries have something to match."""
    folder: Path = tmp_path_factory.mktemp("instances")
    files = ct_files(folder, 3, transfer_syntax=ExplicitVRLittleEndian)
    assert store(fuzz_pacs, *files) == [0x0000] * 3
    return fuzz_pacs


def test_c_find_identifiers_decode_to_json_and_match_or_are_refused(populated: Running) -> None:
    query = populated.qr.query

    def check(case: tuple[bytes, bool]) -> None:
        data, implicit = case
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # in a server they are logged, not raised
            try:
                ds = decode(BytesIO(data), implicit, True)
                # what the C-FIND handler reads first; pydicom decodes lazily
                ds.get("SpecificCharacterSet")
            except Exception:
                return  # the handler answers Unable to process
            identifier = to_json(ds)
            json.dumps(identifier)  # the catalog and the event log keep it as JSON
            with contextlib.suppress(MicropacsError):  # each maps to a failure status
                populated.loop_call(query.find(identifier, study_root=True))

    strategy = st.tuples(inputs(IDENTIFIER_SEEDS, 256), st.booleans())
    fuzz("c-find identifier", strategy, check, weight=1)
