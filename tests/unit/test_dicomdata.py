"""The synthetic DICOM generator writes files that read back as what was built."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    RTStructureSetStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from tests import dicomdata
from tests.dicomdata import SeriesSpec, StudySpec

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

needs_j2k = pytest.mark.skipif(
    not dicomdata.can_encode(JPEG2000Lossless), reason="no JPEG 2000 encoder installed"
)


def small_ct() -> Dataset:
    return dicomdata.ct_image(rows=64, cols=48, instance_number=3)


def small_us() -> Dataset:
    return dicomdata.us_multiframe(frames=3, rows=40, cols=50)


def small_sc() -> Dataset:
    return dicomdata.secondary_capture(rows=33, cols=45)  # odd pixel count: padded


def small_mr() -> Dataset:
    return dicomdata.mr_image(rows=32, cols=32)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_native_syntaxes_read_back_with_complete_file_meta(tmp_path: Path, syntax: str) -> None:
    ds = small_ct()
    path = dicomdata.write(ds, tmp_path / "ct.dcm", syntax)
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.SOPClassUID == back.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert back.SOPInstanceUID == back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.ImplementationClassUID == dicomdata.IMPLEMENTATION_CLASS_UID
    assert path.read_bytes()[128:132] == b"DICM"
    assert (back.Rows, back.Columns, back.BitsAllocated, back.BitsStored) == (64, 48, 16, 12)
    assert np.array_equal(back.pixel_array, ds.pixel_array)


@pytest.mark.parametrize("syntax", [RLELossless, pytest.param(JPEG2000Lossless, marks=needs_j2k)])
@pytest.mark.parametrize("build", [small_ct, small_mr, small_us, small_sc])
def test_lossless_compression_round_trips(
    tmp_path: Path, syntax: str, build: Callable[[], Dataset]
) -> None:
    ds = build()
    source = ds.pixel_array.copy()
    path = dicomdata.write(ds, tmp_path / "img.dcm", syntax)
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.SOPInstanceUID == ds.SOPInstanceUID  # lossless: same instance
    assert np.array_equal(back.pixel_array, source)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # the source is untouched
    assert np.array_equal(ds.pixel_array, source)


def test_jpeg_ls_is_encoded_or_refused_clearly(tmp_path: Path) -> None:
    ds = small_ct()
    if dicomdata.can_encode(JPEGLSLossless):
        back = dcmread(dicomdata.write(ds, tmp_path / "ls.dcm", JPEGLSLossless))
        assert np.array_equal(back.pixel_array, ds.pixel_array)
    else:
        with pytest.raises(dicomdata.EncoderUnavailableError, match="JPEG-LS"):
            dicomdata.write(ds, tmp_path / "ls.dcm", JPEGLSLossless)
        assert not (tmp_path / "ls.dcm").exists()


def test_unknown_syntax_and_compressing_an_sr_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="supported"):
        dicomdata.write(small_ct(), tmp_path / "x.dcm", "1.2.840.10008.1.2.4.50")
    with pytest.raises(ValueError, match="no pixel data"):
        dicomdata.write(dicomdata.basic_text_sr(), tmp_path / "sr.dcm", RLELossless)


@pytest.mark.parametrize(
    ("charset", "name", "codec"),
    [("ISO_IR 192", "Dvořák^Antonín", "utf-8"), ("ISO_IR 100", "Müller^Jürgen", "latin-1")],
)
def test_non_ascii_names_are_encoded_in_the_charset(
    tmp_path: Path, charset: str, name: str, codec: str
) -> None:
    study = StudySpec(patient_name=name, referring_physician_name=name, charset=charset)
    path = dicomdata.write(dicomdata.ct_image(study, rows=16, cols=16), tmp_path / "ct.dcm")
    raw = path.read_bytes()
    assert name.encode(codec) in raw
    back = dcmread(path)
    assert back.SpecificCharacterSet == charset
    assert str(back.PatientName) == name
    assert str(back.ReferringPhysicianName) == name


def test_non_ascii_text_needs_a_charset() -> None:
    with pytest.raises(ValueError, match="charset"):
        StudySpec(patient_name="Dvořák^Antonín")


def test_mixed_set_covers_sop_classes_patients_and_syntaxes(tmp_path: Path) -> None:
    paths = dicomdata.make_mixed_set(tmp_path)
    datasets = [dcmread(p) for p in paths]
    assert [d.SOPClassUID for d in datasets] == [
        CTImageStorage,
        RTStructureSetStorage,
        MRImageStorage,
        ComputedRadiographyImageStorage,
        BasicTextSRStorage,
        UltrasoundMultiFrameImageStorage,
        SecondaryCaptureImageStorage,
    ]
    syntaxes = {d.file_meta.TransferSyntaxUID for d in datasets}
    assert {RLELossless, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian} <= syntaxes
    assert len({d.PatientID for d in datasets}) == 3
    assert len({d.StudyInstanceUID for d in datasets}) == 4
    names = {str(d.PatientName) for d in datasets}
    assert {"Dvořák^Antonín", "Müller^Jürgen"} <= names
    for ds in datasets:
        if "PixelData" in ds:
            assert ds.pixel_array.size > 0  # every compressed object decodes
    ct, rt, sr = datasets[0], datasets[1], datasets[4]
    referenced = rt.ReferencedFrameOfReferenceSequence[0]
    assert referenced.FrameOfReferenceUID == ct.FrameOfReferenceUID
    contour_image = referenced.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert contour_image.ContourImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert rt.StructureSetROISequence[0].ROINumber == rt.ROIContourSequence[0].ReferencedROINumber
    assert "PixelData" not in sr
    assert sr.ContentSequence[0].ValueType == "TEXT"
    assert sr.ContentSequence[0].TextValue == "Herz und Lunge unauffällig."


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="DCMTK is not installed")
def test_dcmtk_parses_the_mixed_set_without_complaint(tmp_path: Path) -> None:
    for path in dicomdata.make_mixed_set(tmp_path):
        result = subprocess.run(
            ["dcmdump", "-E", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "E:" not in result.stderr and "W:" not in result.stderr, result.stderr


@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US", "SR", "RTSTRUCT", "SC", "OT"])
def test_make_study_writes_one_series_per_modality(tmp_path: Path, modality: str) -> None:
    study = StudySpec(patient_id="P-STUDY", accession_number="ACC-9")
    paths = dicomdata.make_study(tmp_path / "nested", 2, modality=modality, study=study)
    datasets = [dcmread(p, stop_before_pixels=True) for p in paths]
    assert [int(d.InstanceNumber) for d in datasets] == [1, 2]
    assert len({d.SOPInstanceUID for d in datasets}) == 2
    assert {d.StudyInstanceUID for d in datasets} == {study.study_instance_uid}
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    expected = {"SC": "OT", "OT": "OT"}.get(modality, modality)
    assert {d.Modality for d in datasets} == {expected}


def test_ct_series_shares_pixels_with_new_uids_and_positions(tmp_path: Path) -> None:
    series = SeriesSpec(series_number=7)
    paths = dicomdata.make_ct_series(tmp_path, 20, rows=32, cols=32, series=series)
    datasets = [dcmread(p) for p in paths]
    assert len({d.SOPInstanceUID for d in datasets}) == 20
    assert all(d.SOPInstanceUID == d.file_meta.MediaStorageSOPInstanceUID for d in datasets)
    assert {d.SeriesInstanceUID for d in datasets} == {series.series_instance_uid}
    assert [int(d.InstanceNumber) for d in datasets] == list(range(1, 21))
    assert [float(d.ImagePositionPatient[2]) for d in datasets] == [i * 2.5 for i in range(20)]
    assert len({d.PixelData for d in datasets}) == 1


def test_ct_series_can_be_compressed_once(tmp_path: Path) -> None:
    paths = dicomdata.make_ct_series(tmp_path, 3, rows=32, cols=32, transfer_syntax=RLELossless)
    datasets = [dcmread(p) for p in paths]
    assert {d.file_meta.TransferSyntaxUID for d in datasets} == {RLELossless}
    assert len({d.SOPInstanceUID for d in datasets}) == 3
    assert datasets[2].pixel_array.shape == (32, 32)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_large_multiframe_is_streamed_as_a_valid_object(tmp_path: Path, syntax: str) -> None:
    size = 3 * 1024 * 1024 + 1
    path = dicomdata.make_large_multiframe(
        tmp_path / "big.dcm", size, rows=256, cols=256, transfer_syntax=syntax
    )
    back = dcmread(path)
    frames = 25  # ceil(size / 128 KiB)
    assert back.SOPClassUID == MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    assert back.file_meta.TransferSyntaxUID == syntax
    assert int(back.NumberOfFrames) == frames
    assert len(back.PixelData) == frames * 256 * 256 * 2
    assert path.stat().st_size < len(back.PixelData) + 4096
    in_memory = dicomdata.multiframe_image(frames=frames, rows=256, cols=256)
    assert back.PixelData == in_memory.PixelData
    assert back.pixel_array.shape == (frames, 256, 256)


def test_large_multiframe_refuses_what_one_element_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="limit"):
        dicomdata.make_large_multiframe(tmp_path / "huge.dcm", 5 * 1024**3)


def test_synthetic_headers_are_deterministic_and_shaped_like_an_archive() -> None:
    first, again = dicomdata.synthetic_header(0), dicomdata.synthetic_header(0)
    assert first == again
    assert "PixelData" not in first
    assert first.SOPClassUID == CTImageStorage
    same_series = dicomdata.synthetic_header(249)
    next_study = dicomdata.synthetic_header(250)
    assert same_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert int(same_series.InstanceNumber) == 250
    assert next_study.StudyInstanceUID != first.StudyInstanceUID
    assert next_study.PatientID == first.PatientID  # four studies per patient
    last = dicomdata.synthetic_header(999_999)
    assert last.PatientID == "P0000999" and last.AccessionNumber == "A000003999"
    for ds in (first, next_study, last):
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert len(uid) <= 64 and UID_PATTERN.match(uid)
    studies = [dicomdata.synthetic_header(k * 250) for k in range(0, 4000, 7)]
    assert len({d.StudyDate[:4] for d in studies}) >= 5
    assert len({str(d.PatientName) for d in studies}) > 100
    accented = [d for d in studies if not str(d.PatientName).isascii()]
    assert accented and all(d.SpecificCharacterSet == "ISO_IR 192" for d in accented)
