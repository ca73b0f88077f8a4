"""The one-pass header reader against pydicom's path it replaces (PS3.10 7.1, PS3.18 F.2).

Every test is differential: :func:`fast_header` must give exactly
``to_json(read_header(path))`` or None (then :func:`header_of` takes pydicom's
path), and :func:`header_of` must raise :class:`NotDicom` exactly when
``read_header`` does.
"""

from __future__ import annotations

import json
import random
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmwrite
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from micropacs.dicom.header_json import Header, fast_header, header_of
from micropacs.dicom.json_model import DicomJson, to_json
from micropacs.dicom.part10 import read_header
from micropacs.dicom.tags import tag_of
from micropacs.errors import NotDicom
from tests import dicomdata


@contextmanager
def quiet() -> Iterator[None]:
    """pydicom's warnings on odd values, which in production leave the values as they are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def reference(path: Path) -> DicomJson | NotDicom:
    """What the store did before: pydicom's read, checked, then to_json."""
    with quiet():
        try:
            return to_json(read_header(path))
        except NotDicom as exc:
            return exc


STORE_USES = (
    "PatientID",
    "IssuerOfPatientID",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
)


def same(a: DicomJson, b: DicomJson) -> bool:
    """Equal, NaN values included."""
    return a == b or json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check(path: Path) -> Header | None:
    """Compare both paths on ``path``; the fast header, if it gave one."""
    expected = reference(path)
    with quiet():
        fast = fast_header(path)
    if isinstance(expected, NotDicom):
        assert fast is None, f"{path.name}: passed a file read_header refuses ({expected})"
        with quiet(), pytest.raises(NotDicom) as raised:
            header_of(path)
        assert str(raised.value) == str(expected)
        return None
    if fast is not None:
        assert same(fast.json, expected), path.name
        with quiet():
            ds = read_header(path)
            given = {keyword: str(ds.get(keyword)) for keyword in STORE_USES}
        assert fast.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)
        # the store passes these to require_uid or str(), as it passed pydicom's values
        assert {keyword: str(fast.value(tag_of(keyword))) for keyword in STORE_USES} == given
        assert fast.is_image == ("Rows" in ds)
    with quiet():
        assert same(header_of(path).json, expected)
    return fast


def test_pydicom_test_files_give_the_same_json_or_fall_back() -> None:
    paths = [Path(p) for p in [*get_testdata_files(), *get_charset_files()]]
    paths = [p for p in paths if p.is_file()]
    assert len(paths) > 80
    fast = [p.name for p in paths if check(p) is not None]
    # most of them take the one pass (not only the trivial ones)
    assert len(fast) > 100
    assert {"CT_small.dcm", "MR_small.dcm", "chrX1.dcm", "rtplan.dcm", "JPEG2000.dcm"} <= set(fast)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless])
@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US", "SR", "RTSTRUCT", "SC", "OT"])
def test_generated_studies_take_the_one_pass(tmp_path: Path, modality: str, syntax: str) -> None:
    if syntax == RLELossless and modality in ("SR", "RTSTRUCT"):
        pytest.skip("no pixel data to compress")
    study = dicomdata.StudySpec(
        patient_name="Dvořák^Antonín=ドボルザーク",
        study_description="CT hrudník",
        charset="ISO_IR 192",
    )
    for path in dicomdata.make_study(tmp_path, 2, modality, study=study, transfer_syntax=syntax):
        header = check(path)
        assert header is not None, path.name
        assert header.is_image == (modality not in ("SR", "RTSTRUCT"))


def test_mixed_set_and_a_ct_series(tmp_path: Path) -> None:
    paths = dicomdata.make_mixed_set(tmp_path / "mixed")
    paths += dicomdata.make_ct_series(
        tmp_path / "ct", 3, 64, 64, transfer_syntax="1.2.840.10008.1.2"
    )
    taken = {p.name: check(p) is not None for p in paths}
    assert taken["05_sr.dcm"] is False  # deflated: pydicom's path
    assert taken["01_ct.dcm"] and taken["02_rtstruct.dcm"] and taken["CT000001.dcm"]


def test_latin1_names_and_a_multiframe(tmp_path: Path) -> None:
    study = dicomdata.StudySpec(
        patient_name="Müller^Jürgen", referring_physician_name="Weiß^Käthe", charset="ISO_IR 100"
    )
    path = dicomdata.write(dicomdata.multiframe_image(study), tmp_path / "mf.dcm")
    header = check(path)
    assert header is not None
    assert header.json["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


def test_deflated_and_big_endian_take_pydicom_path(tmp_path: Path) -> None:
    ct = dicomdata.ct_image(rows=32, cols=32)
    deflated = dicomdata.write(ct, tmp_path / "deflated.dcm", DeflatedExplicitVRLittleEndian)
    assert check(deflated) is None
    big = Path(next(p for p in get_testdata_files("MR_small_bigendian.dcm")))
    assert check(big) is None
    with quiet():
        header = header_of(big)
    assert header.transfer_syntax_uid == ExplicitVRBigEndian
    assert header.is_image


def test_changed_pydicom_config_takes_pydicom_path(tmp_path: Path) -> None:
    path = dicomdata.write(dicomdata.ct_image(rows=16, cols=16), tmp_path / "ct.dcm")
    assert fast_header(path) is not None
    config.datetime_conversion = True
    try:
        assert fast_header(path) is None
    finally:
        config.datetime_conversion = False


def cuts(size: int, header_end: int) -> list[int]:
    """Offsets to cut a file at: every byte of the header, a sample of the rest."""
    return sorted({*range(header_end), *range(header_end, size, max(1, size // 97)), size - 1})


def pixel_data_offset(path: Path) -> int:
    return path.read_bytes().rfind(b"\xe0\x7f\x10\x00") + 16


@pytest.mark.parametrize(
    "name", ["ct_explicit", "ct_implicit", "rtstruct_implicit", "ct_rle", "sr_explicit"]
)
def test_truncated_files_are_refused_exactly_when_read_header_refuses(
    tmp_path: Path, name: str
) -> None:
    study = dicomdata.StudySpec()
    source = {
        "ct_explicit": lambda: dicomdata.write(
            dicomdata.ct_image(study, rows=16, cols=16), tmp_path / "a.dcm"
        ),
        "ct_implicit": lambda: dicomdata.write(
            dicomdata.ct_image(study, rows=16, cols=16), tmp_path / "a.dcm", ImplicitVRLittleEndian
        ),
        "rtstruct_implicit": lambda: dicomdata.write(
            dicomdata.rt_structure_set(study, images=[dicomdata.ct_image(study, rows=8, cols=8)]),
            tmp_path / "a.dcm",
            ImplicitVRLittleEndian,
        ),
        "ct_rle": lambda: dicomdata.write(
            dicomdata.ct_image(study, rows=16, cols=16), tmp_path / "a.dcm", RLELossless
        ),
        "sr_explicit": lambda: dicomdata.write(dicomdata.basic_text_sr(study), tmp_path / "a.dcm"),
    }[name]()
    data = source.read_bytes()
    assert check(source) is not None
    cut = tmp_path / "cut.dcm"
    refused = 0
    for offset in cuts(len(data), min(len(data), pixel_data_offset(source))):
        cut.write_bytes(data[:offset])
        expected = reference(cut)
        if isinstance(expected, NotDicom):
            refused += 1
            with quiet(), pytest.raises(NotDicom) as raised:
                header_of(cut)
            assert str(raised.value) == str(expected), offset
            with quiet():
                assert fast_header(cut) is None, offset
        else:
            with quiet():
                fast = fast_header(cut)
                assert header_of(cut).json == expected, offset
            assert fast is None or fast.json == expected, offset
    assert refused > len(data) // 200


def test_mutated_files_give_the_same_json_or_fall_back(tmp_path: Path) -> None:
    study = dicomdata.StudySpec(patient_name="Müller^Jürgen", charset="ISO_IR 100")
    ct = dicomdata.ct_image(study, rows=8, cols=8)
    sources = [
        dicomdata.write(ct, tmp_path / "e.dcm"),
        dicomdata.write(ct, tmp_path / "i.dcm", ImplicitVRLittleEndian),
        dicomdata.write(
            dicomdata.rt_structure_set(study, images=[ct]),
            tmp_path / "rt.dcm",
            ImplicitVRLittleEndian,
        ),
    ]
    rng = random.Random(13)
    mutant = tmp_path / "m.dcm"
    taken = 0
    for number in range(600):
        data = bytearray(sources[number % len(sources)].read_bytes())
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(132, len(data))] = rng.randrange(256)
        mutant.write_bytes(bytes(data))
        taken += check(mutant) is not None
    assert taken > 100


def test_deeply_nested_sequences_take_pydicom_path(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "deep.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    opening = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    depth = 5000  # (0008,1115) items within items: deeper than Python's stack
    path.write_bytes(path.read_bytes() + opening * depth + closing * depth)
    assert check(path) is None


# --------------------------------------------------------------------- hypothesis datasets

_TEXT = st.text(
    alphabet=st.sampled_from("AZaz09 ^=-._\\äöüßÉ汉字"), max_size=12
)  # backslashes make several values, '=' and '^' PN groups and components
_ASCII = st.text(alphabet=st.sampled_from("AZ09 ._-\\"), max_size=12)
_DECIMAL = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: f"{f:.6g}"),
    st.sampled_from(["", " ", "1.", ".5", "+1e3", "-0", "abc", "1,5", " 2.5 ", "1\\", "nan"]),
)
_INTEGER = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(str),
    st.sampled_from(["", " 7 ", "1.0", "x", "3\\", "+4"]),
)


def _multi(part: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(part, min_size=1, max_size=3).map("\\".join)


_ELEMENTS: dict[int, tuple[str, st.SearchStrategy[Any]]] = {
    0x00080008: ("CS", _ASCII),
    0x00080020: ("DA", st.sampled_from(["20240101", "", "2024\\2025", "20240101 "])),
    0x00080030: ("TM", st.sampled_from(["101010.5", "", "1010 "])),
    0x00080050: ("SH", _TEXT),
    0x00080054: ("AE", st.sampled_from([" AE1 ", "A\\B", ""])),
    0x00080081: ("ST", _TEXT),
    0x00080090: ("PN", _TEXT),
    0x00081030: ("LO", _TEXT),
    0x00100010: ("PN", _TEXT),
    0x00100020: ("LO", _TEXT),
    0x00104000: ("LT", _TEXT),
    0x00180050: ("DS", _multi(_DECIMAL)),
    0x00181030: ("LO", _TEXT),
    0x0020000E: ("UI", st.sampled_from(["1.2.3", "1.2.3\\4.5", "", " 1.2 ", "01.2"])),
    0x00100021: ("LO", _TEXT),
    0x00200013: ("IS", _multi(_INTEGER)),
    0x00200032: ("DS", _multi(_DECIMAL)),
    0x00209161: ("UI", st.sampled_from(["1.2.3", "1.2.3\\4.5", "", "1.2.840.10008.1.2 "])),
    0x00280009: ("AT", st.lists(st.integers(0, 2**32 - 1), max_size=2)),
    0x00280010: ("US", st.lists(st.integers(0, 65535), max_size=2)),
    0x00280103: ("US", st.sampled_from([0, 1])),
    0x00281050: ("DS", _multi(_DECIMAL)),
    0x00282000: ("OB", st.binary(max_size=1100)),
    0x0040A160: ("UT", _TEXT),
    0x00189328: ("FD", st.lists(st.floats(allow_nan=False, width=64), max_size=2)),
    0x00181060: ("DS", _DECIMAL),
    0x00189306: ("FD", st.floats(-10, 10, allow_nan=False)),
    0x00186020: ("SL", st.lists(st.integers(-(2**31), 2**31 - 1), max_size=2)),
    0x00280106: ("US", st.integers(0, 32767)),  # 'US or SS': implicit VR leaves it ambiguous
    0x0040A30A: ("DS", _DECIMAL),
    0x00720068: ("LT", _TEXT),
    0x0040A132: ("UL", st.lists(st.integers(0, 2**32 - 1), max_size=2)),
    0x00720022: ("SH", _TEXT),
}
_PRIVATE: dict[int, tuple[str, st.SearchStrategy[Any]]] = {
    0x00090010: ("LO", st.sampled_from(["MICROPACS TEST", "GEMS_IDEN_01", ""])),
    0x00091001: ("LO", _TEXT),
    0x00091002: ("UN", st.binary(max_size=1100)),
}


@st.composite
def datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    chosen = draw(st.lists(st.sampled_from(sorted(_ELEMENTS)), max_size=10, unique=True))
    elements = [(tag, *_ELEMENTS[tag]) for tag in chosen]
    if draw(st.booleans()):
        elements += [(tag, vr, values) for tag, (vr, values) in _PRIVATE.items()]
    for tag, vr, values in elements:
        value = draw(values)
        with quiet(), config.disable_value_validation(), suppress(ValueError):
            ds.add_new(tag, vr, value)  # DS and IS refuse some strings even so
    if depth < 2 and draw(st.booleans()):
        items = draw(st.lists(datasets(depth + 1), max_size=3))
        ds.add_new(0x00081115, "SQ", Sequence(items))
        # pydicom writes defined lengths unless told; modalities write either
        ds[0x00081115].is_undefined_length = draw(st.booleans())
        for item in items:
            item.is_undefined_length_sequence_item = draw(st.booleans())
    return ds


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ds=datasets(),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192", "", "ISO_IR 6"]),
    implicit=st.booleans(),
)
def test_generated_datasets_give_the_same_json_or_fall_back(
    ds: Dataset, charset: str | None, implicit: bool
) -> None:
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.dcm"
        with quiet(), config.disable_value_validation():
            try:
                dcmwrite(path, ds, enforce_file_format=True)
            except (UnicodeError, ValueError, OverflowError, struct.error):
                event("not writable")
                return  # pydicom cannot write it in this character set
        event("one pass" if check(path) is not None else "pydicom's path")
