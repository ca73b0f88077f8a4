"""Fuzzing the Part 10 header reader (PS3.10 7) every received object goes through.

:func:`~micropacs.dicom.part10.read_header` returns a dataset or raises
:class:`~micropacs.errors.NotDicom`; what it returns is turned into DICOM JSON
for the catalog by :func:`~micropacs.dicom.json_model.to_json`, which never
raises.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from micropacs.dicom.json_model import to_json
from micropacs.dicom.part10 import read_header
from micropacs.errors import NotDicom
from tests.fuzz.conftest import fuzz
from tests.fuzz.mutation import inputs


def _dataset(transfer_syntax: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["fuzz", transfer_syntax])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["fuzz study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["fuzz series"])
    ds.PatientName = "Fuzz^Test"
    ds.PatientID = "FUZZ-1"
    ds.Modality = "CT"
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodeMeaning = "Brain"
    nested = Dataset()
    nested.CodeValue = "1"
    item.PurposeOfReferenceCodeSequence = Sequence([nested])
    ds.AnatomicRegionSequence = Sequence([item, item])
    ds.AnatomicRegionSequence.is_undefined_length = True
    ds.Rows, ds.Columns = 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if transfer_syntax == RLELossless:
        ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60, b"\x02" * 31])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = b"\x00\x01" * 16
    return ds


def part10(transfer_syntax: str) -> bytes:
    """A small but complete Part 10 file: sequences, nested items and pixel data."""
    fp = DicomBytesIO()
    dcmwrite(fp, _dataset(transfer_syntax), enforce_file_format=True)
    return bytes(fp.getvalue())


SEEDS = [part10(ts) for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)]


def test_read_header_returns_a_dataset_or_raises_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "received.dcm"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # in a server they are logged, not raised
            try:
                ds = read_header(path)
            except NotDicom:
                return
            json.dumps(to_json(ds))

    fuzz("part10 read_header", inputs(SEEDS, max_random=1024), check, weight=3)
    path.unlink()
    assert list(tmp_path.iterdir()) == []
