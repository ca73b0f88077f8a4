"""Realistic synthetic DICOM data for micropacs' tests and benchmarks.

Everything here is deterministic where it matters (pixel content is seeded,
:func:`synthetic_header` depends on its index only) and nothing happens at
import. The pieces:

* :class:`StudySpec` and :class:`SeriesSpec` describe the patient, study and
  series attributes; UIDs are generated when not given.
* Builders return complete Part 10 datasets (:class:`~pydicom.dataset.FileDataset`
  with file meta) for CT, MR, CR, US multi-frame, Basic Text SR, RT Structure
  Set, Secondary Capture and Multi-frame Grayscale Word SC.
* :func:`write` writes a dataset in one of the :data:`WRITABLE_SYNTAXES`,
  compressing the pixel data losslessly when asked for RLE or JPEG 2000.
* Conveniences make whole sets on disk: :func:`make_study`,
  :func:`make_ct_series` (fast, for benchmarks), :func:`make_mixed_set`,
  :func:`make_large_multiframe` (streams gigabyte objects) and
  :func:`synthetic_header` (header-only instances for catalog loads).
"""

from __future__ import annotations

import copy
import math
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from pydicom import config, dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixels.encoders.base import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
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
    generate_uid,
)

__all__ = [
    "COMPRESSED_SYNTAXES",
    "IMPLEMENTATION_CLASS_UID",
    "NATIVE_SYNTAXES",
    "STORESCU_PROPOSAL",
    "WRITABLE_SYNTAXES",
    "EncoderUnavailableError",
    "SeriesSpec",
    "StudySpec",
    "basic_text_sr",
    "by_transfer_syntax",
    "can_encode",
    "cr_image",
    "ct_image",
    "encoded",
    "iter_multiframe_chunks",
    "make_ct_series",
    "make_large_multiframe",
    "make_mixed_set",
    "make_study",
    "mixed_set_specs",
    "mr_image",
    "multiframe_header",
    "multiframe_image",
    "phantom",
    "rgb_pixels",
    "rt_structure_set",
    "secondary_capture",
    "synthetic_header",
    "transfer_syntax_of",
    "us_frames",
    "us_multiframe",
    "write",
]

IMPLEMENTATION_CLASS_UID = "2.25.62265111403240942079489619912504266325"
"""Implementation Class UID of this generator (a UUID-derived UID)."""
IMPLEMENTATION_VERSION_NAME = "MICROPACS_TEST"
_UID_NAMESPACE = uuid.UUID("dc3f0b04-cbfb-5f8f-bf2a-ce09db1e6348")
"""Namespace of the deterministic ``2.25`` UIDs of :func:`synthetic_header`."""

NATIVE_SYNTAXES: tuple[UID, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
"""Transfer syntaxes with uncompressed pixel data that :func:`write` supports."""
COMPRESSED_SYNTAXES: tuple[UID, ...] = (RLELossless, JPEG2000Lossless, JPEGLSLossless)
"""Lossless compressed syntaxes :func:`write` tries; see :func:`can_encode`."""
WRITABLE_SYNTAXES: tuple[UID, ...] = NATIVE_SYNTAXES + COMPRESSED_SYNTAXES

PIXEL_DATA_TAG = 0x7FE00010
MAX_PIXEL_DATA_BYTES = 0xFFFFFFFE
"""Largest even length a defined-length (7FE0,0010) element can have."""

Pixels = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]


class EncoderUnavailableError(RuntimeError):
    """No pixel data encoder for the requested transfer syntax is installed."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class StudySpec:
    """Patient and study level attributes; ``charset`` is (0008,0005) or ``None`` (ASCII)."""

    patient_name: str = "Doe^John"
    patient_id: str = "PID00001"
    issuer_of_patient_id: str = "MICROPACS"
    patient_birth_date: str = "19700101"
    patient_sex: str = "M"
    study_instance_uid: str = field(default_factory=generate_uid)
    study_date: str = "20240115"
    study_time: str = "101500"
    accession_number: str = "ACC00001"
    study_id: str = "1"
    study_description: str = "Synthetic study"
    referring_physician_name: str = "Referrer^Rita"
    charset: str | None = None

    def __post_init__(self) -> None:
        """Refuse non-ASCII text without a character set that could encode it."""
        texts = (self.patient_name, self.study_description, self.referring_physician_name)
        if self.charset is None and not all(t.isascii() for t in texts):
            raise ValueError("non-ASCII text needs a charset, e.g. 'ISO_IR 192' (UTF-8)")


@dataclass(frozen=True)
class SeriesSpec:
    """Series level attributes; ``modality=None`` lets each builder use its own."""

    modality: str | None = None
    series_instance_uid: str = field(default_factory=generate_uid)
    series_number: int = 1
    series_description: str = "Synthetic series"
    body_part_examined: str = "CHEST"
    frame_of_reference_uid: str = field(default_factory=generate_uid)


# ---------------------------------------------------------------------- pixel data


def _grid(rows: int, cols: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Normalised coordinates in [-1, 1]: a column vector ``y`` and a row vector ``x``."""
    y = np.linspace(-1.0, 1.0, rows)[:, np.newaxis]
    x = np.linspace(-1.0, 1.0, cols)[np.newaxis, :]
    return y, x


def phantom(
    rows: int,
    cols: int,
    seed: int,
    levels: tuple[int, int, int, int],
    *,
    noise: int = 12,
    max_value: int = 4095,
) -> npt.NDArray[np.uint16]:
    """A body-like slice: background, an elliptical body, two lungs and a spine, plus noise.

    ``levels`` are the stored values of (background, soft tissue, lung, bone).
    """
    background, tissue, lung, bone = levels
    y, x = _grid(rows, cols)
    image = np.full((rows, cols), background, dtype=np.int32)
    image[(x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1.0] = tissue
    for side in (-0.38, 0.38):
        image[((x - side) / 0.25) ** 2 + ((y + 0.05) / 0.4) ** 2 <= 1.0] = lung
    image[x**2 + (y - 0.45) ** 2 <= 0.08**2] = bone
    rng = np.random.default_rng(seed)
    image += rng.integers(-noise, noise + 1, size=(rows, cols), dtype=np.int32)
    return np.clip(image, 0, max_value).astype("<u2")


def rgb_pixels(rows: int, cols: int, seed: int) -> npt.NDArray[np.uint8]:
    """An 8-bit RGB screen capture: colour gradients, a grid and a few noisy panels."""
    y, x = _grid(rows, cols)
    image = np.empty((rows, cols, 3), dtype=np.uint8)
    image[..., 0] = ((x + 1.0) * 127.5).astype(np.uint8)
    image[..., 1] = ((y + 1.0) * 127.5).astype(np.uint8)
    image[..., 2] = 96
    image[::32, :, :] = 255
    image[:, ::32, :] = 255
    rng = np.random.default_rng(seed)
    panel = rng.integers(0, 256, size=(rows // 4, cols // 4, 3), dtype=np.uint8)
    image[rows // 8 : rows // 8 + panel.shape[0], cols // 8 : cols // 8 + panel.shape[1]] = panel
    return image


def us_frames(frames: int, rows: int, cols: int, seed: int) -> npt.NDArray[np.uint8]:
    """RGB ultrasound cine: grey speckle in a fan, and a colour-flow box that moves."""
    y, x = _grid(rows, cols)
    radius = np.hypot(x, y + 1.0)
    fan = (radius <= 1.9) & (np.abs(x) <= (y + 1.0) * 0.7)
    rng = np.random.default_rng(seed)
    speckle = rng.integers(0, 200, size=(frames, rows, cols), dtype=np.uint8)
    speckle[:, ~fan] = 0
    video = np.repeat(speckle[..., np.newaxis], 3, axis=3)
    for index in range(frames):
        top = rows // 3 + (index * 4) % max(1, rows // 3)
        box = video[index, top : top + rows // 8, cols // 2 - cols // 10 : cols // 2 + cols // 10]
        box[..., 0] = 220
        box[..., 2] = 40
    return video


# ------------------------------------------------------------------------- builders


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    """File meta information for a native (Explicit VR Little Endian) dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _patient_and_study(ds: Dataset, study: StudySpec) -> None:
    """The Patient and General Study modules."""
    if study.charset is not None:
        ds.SpecificCharacterSet = study.charset
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = study.issuer_of_patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.StudyID = study.study_id
    ds.StudyDescription = study.study_description
    ds.ReferringPhysicianName = study.referring_physician_name


def _series_and_equipment(ds: Dataset, series: SeriesSpec, modality: str, date_: str) -> None:
    """The General Series and General Equipment modules."""
    ds.Modality = series.modality or modality
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.BodyPartExamined = series.body_part_examined
    ds.SeriesDate = date_
    ds.Manufacturer = "micropacs"
    ds.ManufacturerModelName = "dicomdata"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.StationName = "SYNTH01"
    ds.SoftwareVersions = "1.0"


def _base(
    sop_class_uid: str,
    modality: str,
    study: StudySpec | None,
    series: SeriesSpec | None,
    instance_number: int,
    sop_instance_uid: str | None,
) -> FileDataset:
    """A dataset with file meta, Patient, Study, Series, Equipment and SOP Common modules."""
    study = study or StudySpec()
    series = series or SeriesSpec()
    uid = sop_instance_uid or generate_uid()
    ds = FileDataset(
        "", Dataset(), file_meta=_file_meta(sop_class_uid, uid), preamble=b"\x00" * 128
    )
    _patient_and_study(ds, study)
    _series_and_equipment(ds, series, modality, study.study_date)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = uid
    ds.InstanceCreationDate = study.study_date
    ds.InstanceNumber = instance_number
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    return ds


def _set_pixels(
    ds: Dataset,
    pixels: Pixels,
    photometric: str,
    bits_stored: int,
    *,
    multiframe: bool = False,
) -> None:
    """The Image Pixel module from an array shaped (frames,) rows, cols (, samples)."""
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    shape = pixels.shape[1:] if multiframe else pixels.shape
    if multiframe:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    _set_pixel_bytes(ds, np.ascontiguousarray(pixels).tobytes())


def _set_pixel_bytes(ds: Dataset, data: bytes) -> None:
    """(7FE0,0010) as OB or OW, padded to even length."""
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def _image_plane(ds: Dataset, series: SeriesSpec | None, z: float, spacing: float) -> None:
    """Image Plane and Frame of Reference modules of an axial slice at ``z`` mm."""
    ds.FrameOfReferenceUID = (series or SeriesSpec()).frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [
        f"{-ds.Columns * spacing / 2:.2f}",
        f"{-ds.Rows * spacing / 2:.2f}",
        f"{z:.2f}",
    ]
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.SliceLocation = f"{z:.2f}"


def ct_image(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    rows: int = 512,
    cols: int = 512,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
) -> FileDataset:
    """A CT Image: 16-bit MONOCHROME2, 12 bits stored, rescaled to Hounsfield units."""
    ds = _base(CTImageStorage, "CT", study, series, instance_number, sop_instance_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    ds.SliceThickness = "2.50"
    ds.ConvolutionKernel = "STANDARD"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    seed = instance_number if seed is None else seed
    _set_pixels(ds, phantom(rows, cols, seed, (24, 1064, 224, 1724)), "MONOCHROME2", 12)
    _image_plane(ds, series, (instance_number - 1) * 2.5, 350.0 / max(rows, cols))
    return ds


def mr_image(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    rows: int = 256,
    cols: int = 256,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
) -> FileDataset:
    """An MR Image: T1 spin echo, 16-bit MONOCHROME2, 12 bits stored."""
    ds = _base(MRImageStorage, "MR", study, series, instance_number, sop_instance_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "500"
    ds.EchoTime = "15"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "1.5"
    ds.ImagingFrequency = "63.87"
    ds.SliceThickness = "5.00"
    ds.AcquisitionNumber = 1
    seed = instance_number if seed is None else seed
    _set_pixels(ds, phantom(rows, cols, seed, (0, 620, 180, 1400), noise=20), "MONOCHROME2", 12)
    _image_plane(ds, series, (instance_number - 1) * 5.0, 240.0 / max(rows, cols))
    return ds


def cr_image(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    rows: int = 1024,
    cols: int = 832,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
) -> FileDataset:
    """A Computed Radiography chest PA: 16-bit MONOCHROME2, 12 bits stored."""
    ds = _base(
        ComputedRadiographyImageStorage, "CR", study, series, instance_number, sop_instance_uid
    )
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = ["0.168", "0.168"]
    ds.KVP = "125"
    ds.PlateType = "STANDARD"
    seed = instance_number if seed is None else seed
    _set_pixels(ds, phantom(rows, cols, seed, (200, 1900, 700, 3300), noise=24), "MONOCHROME2", 12)
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    return ds


def us_multiframe(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    frames: int = 8,
    rows: int = 240,
    cols: int = 320,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
) -> FileDataset:
    """An Ultrasound Multi-frame Image: RGB, 8 bits, a cine of ``frames`` frames."""
    ds = _base(
        UltrasoundMultiFrameImageStorage, "US", study, series, instance_number, sop_instance_uid
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.FrameTime = "33.33"
    ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
    ds.CineRate = 30
    ds.LossyImageCompression = "00"
    ds.PatientOrientation = ""
    seed = instance_number if seed is None else seed
    _set_pixels(ds, us_frames(frames, rows, cols, seed), "RGB", 8, multiframe=True)
    return ds


def secondary_capture(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    rows: int = 480,
    cols: int = 640,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
) -> FileDataset:
    """A Secondary Capture Image: an 8-bit RGB screen capture."""
    ds = _base(SecondaryCaptureImageStorage, "OT", study, series, instance_number, sop_instance_uid)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    seed = instance_number if seed is None else seed
    _set_pixels(ds, rgb_pixels(rows, cols, seed), "RGB", 8)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _text_item(concept: Dataset, text: str) -> Dataset:
    """A CONTAINS / TEXT content item."""
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = DicomSequence([concept])
    item.TextValue = text
    return item


def basic_text_sr(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    findings: str = "No acute abnormality.",
    impression: str = "Normal study.",
) -> FileDataset:
    """A Basic Text SR report: a CONTAINER with two TEXT items; no pixel data."""
    ds = _base(BasicTextSRStorage, "SR", study, series, instance_number, sop_instance_uid)
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence(
        [_code("18748-4", "LN", "Diagnostic imaging report")]
    )
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(
        [
            _text_item(_code("121071", "DCM", "Finding"), findings),
            _text_item(_code("121073", "DCM", "Impression"), impression),
        ]
    )
    return ds


def _referenced_frame_of_reference(
    frame_of_reference_uid: str,
    images: Sequence[Dataset],
) -> Dataset:
    """A Referenced Frame of Reference item, with the referenced study and series if any."""
    item = Dataset()
    item.FrameOfReferenceUID = frame_of_reference_uid
    if not images:
        return item
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID
    series.ContourImageSequence = DicomSequence([_image_reference(i) for i in images])
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Study Component
    referenced_study.ReferencedSOPInstanceUID = images[0].StudyInstanceUID
    referenced_study.RTReferencedSeriesSequence = DicomSequence([series])
    item.RTReferencedStudySequence = DicomSequence([referenced_study])
    return item


def _image_reference(image: Dataset) -> Dataset:
    """A Referenced SOP Class / Instance item for ``image``."""
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _octagon(radius: float, z: float) -> list[str]:
    """ContourData of a closed planar octagon around the origin at height ``z``."""
    points: list[str] = []
    for k in range(8):
        angle = k * math.pi / 4
        x, y = round(radius * math.cos(angle), 2) + 0.0, round(radius * math.sin(angle), 2) + 0.0
        points += [f"{x:.2f}", f"{y:.2f}", f"{z:.2f}"]
    return points


def _contour(number: int, image: Dataset | None) -> Dataset:
    """A CLOSED_PLANAR octagon of ROI ``number`` on ``image``'s plane (or at z=0)."""
    contour = Dataset()
    z = 0.0
    if image is not None:
        z = float(image.ImagePositionPatient[2])
        contour.ContourImageSequence = DicomSequence([_image_reference(image)])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 8
    contour.ContourData = _octagon(40.0 + 20.0 * number, z)
    return contour


def _roi_contour(number: int, images: Sequence[Dataset]) -> Dataset:
    """An ROI Contour item: one CLOSED_PLANAR octagon per referenced image (or at z=0)."""
    planes: Sequence[Dataset | None] = images or [None]
    contours = [_contour(number, image) for image in planes]
    item = Dataset()
    item.ROIDisplayColor = [255, 40 * number % 256, 0]
    item.ReferencedROINumber = number
    item.ContourSequence = DicomSequence(contours)
    return item


def _interpreted_type(roi_name: str) -> str:
    """A plausible RT ROI Interpreted Type for an ROI name."""
    if roi_name.upper() in ("BODY", "EXTERNAL"):
        return "EXTERNAL"
    return "PTV" if roi_name.upper().startswith("PTV") else "ORGAN"


def _roi_entries(number: int, name: str, frame_of_reference_uid: str) -> tuple[Dataset, Dataset]:
    """The Structure Set ROI and RT ROI Observations items of one ROI."""
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = frame_of_reference_uid
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "MANUAL"
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = _interpreted_type(name)
    observation.ROIInterpreter = ""
    return roi, observation


def rt_structure_set(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    images: Sequence[Dataset] = (),
    roi_names: Sequence[str] = ("BODY", "PTV"),
) -> FileDataset:
    """An RT Structure Set with one contour per ROI on each of ``images`` (CT slices).

    The frame of reference is the images' own, or the series spec's without images.
    """
    ds = _base(RTStructureSetStorage, "RTSTRUCT", study, series, instance_number, sop_instance_uid)
    ds.OperatorsName = ""
    ds.StructureSetLabel = "SYNTH_SS"
    ds.StructureSetName = "Synthetic structures"
    ds.StructureSetDate = ds.StudyDate
    ds.StructureSetTime = ds.StudyTime
    frame_of_reference = (
        images[0].FrameOfReferenceUID if images else (series or SeriesSpec()).frame_of_reference_uid
    )
    ds.ReferencedFrameOfReferenceSequence = DicomSequence(
        [_referenced_frame_of_reference(frame_of_reference, images)]
    )
    entries = [
        _roi_entries(n, name, frame_of_reference) for n, name in enumerate(roi_names, start=1)
    ]
    ds.StructureSetROISequence = DicomSequence([roi for roi, _ in entries])
    ds.ROIContourSequence = DicomSequence(
        [_roi_contour(n, images) for n in range(1, len(roi_names) + 1)]
    )
    ds.RTROIObservationsSequence = DicomSequence([obs for _, obs in entries])
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def multiframe_header(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    frames: int,
    rows: int = 512,
    cols: int = 512,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
) -> FileDataset:
    """A Multi-frame Grayscale Word SC Image with every attribute except Pixel Data."""
    ds = _base(
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        "OT",
        study,
        series,
        instance_number,
        sop_instance_uid,
    )
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.FrameTime = "40"
    ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def iter_multiframe_chunks(
    frames: int,
    rows: int,
    cols: int,
    *,
    seed: int = 0,
    chunk_bytes: int = 16 << 20,
) -> Iterator[npt.NDArray[np.uint16]]:
    """The frames of a large object, a few at a time: a phantom brightening frame by frame."""
    base = phantom(rows, cols, seed, (24, 1064, 224, 1724), max_value=60000)
    per_chunk = max(1, chunk_bytes // base.nbytes)
    for first in range(0, frames, per_chunk):
        offsets = (np.arange(first, min(frames, first + per_chunk)) % 1024).astype(np.uint16)
        yield base[np.newaxis, :, :] + offsets[:, np.newaxis, np.newaxis]


def multiframe_image(
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    *,
    frames: int = 4,
    rows: int = 512,
    cols: int = 512,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    seed: int = 0,
) -> FileDataset:
    """A Multi-frame Grayscale Word SC Image held in memory (for small frame counts)."""
    ds = multiframe_header(
        study,
        series,
        frames=frames,
        rows=rows,
        cols=cols,
        instance_number=instance_number,
        sop_instance_uid=sop_instance_uid,
    )
    chunks = iter_multiframe_chunks(frames, rows, cols, seed=seed)
    _set_pixel_bytes(ds, b"".join(chunk.tobytes() for chunk in chunks))
    return ds


# -------------------------------------------------------------------------- writing


def can_encode(transfer_syntax: str) -> bool:
    """Whether :func:`write` can produce ``transfer_syntax`` in this environment."""
    uid = UID(transfer_syntax)
    if uid in NATIVE_SYNTAXES:
        return True
    return uid in COMPRESSED_SYNTAXES and get_encoder(uid).is_available


def _check_encoder(uid: UID) -> None:
    """Raise a clear error when ``uid`` is unknown here or has no installed encoder."""
    if uid not in WRITABLE_SYNTAXES:
        names = ", ".join(s.name for s in WRITABLE_SYNTAXES)
        raise ValueError(f"cannot write {uid} ({uid.name}); supported: {names}")
    if uid in COMPRESSED_SYNTAXES and not get_encoder(uid).is_available:
        missing = "; ".join(get_encoder(uid).missing_dependencies)
        raise EncoderUnavailableError(
            f"no encoder for {uid.name} is installed in this environment ({missing})"
        )


def encoded(
    ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, *, encoding_plugin: str = ""
) -> Dataset:
    """``ds`` ready to be written in ``transfer_syntax``; a compressed copy if need be.

    ``ds`` itself is never modified when its pixel data must be (de)compressed.
    """
    uid = UID(transfer_syntax)
    _check_encoder(uid)
    current = UID(ds.file_meta.TransferSyntaxUID)
    if current == uid:
        return ds
    if current.is_compressed:
        ds = copy.deepcopy(ds)
        ds.decompress()
    if not uid.is_compressed:
        ds.file_meta.TransferSyntaxUID = uid
        return ds
    if "PixelData" not in ds:
        raise ValueError(f"{ds.SOPClassUID.name} has no pixel data to compress as {uid.name}")
    if not current.is_compressed:
        ds = copy.deepcopy(ds)
    ds.compress(uid, encoding_plugin=encoding_plugin, generate_instance_uid=False)
    return ds


def write(
    ds: Dataset,
    path: Path | str,
    transfer_syntax: str = ExplicitVRLittleEndian,
    *,
    encoding_plugin: str = "",
) -> Path:
    """Write ``ds`` as a Part 10 file in ``transfer_syntax``; returns the path.

    Native syntaxes change only ``ds.file_meta.TransferSyntaxUID``; RLE Lossless,
    JPEG 2000 Lossless and JPEG-LS Lossless compress a copy of ``ds`` with the
    first available pydicom encoder plugin (or ``encoding_plugin``) and raise
    :class:`EncoderUnavailableError` when none is installed.
    """
    out = encoded(ds, transfer_syntax, encoding_plugin=encoding_plugin)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(target, out, enforce_file_format=True)
    return target


STORESCU_PROPOSAL: dict[UID, str] = {
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRLittleEndian: "-xe",
    DeflatedExplicitVRLittleEndian: "-xd",
    RLELossless: "-xr",
    JPEG2000Lossless: "-xv",
    JPEGLSLossless: "-xt",
}
"""DCMTK storescu's option that proposes each syntax.

storescu 3.6 proposes only uncompressed syntaxes by default and converts
other files (or fails, for JPEG 2000) unless told to propose their syntax;
send each group of :func:`by_transfer_syntax` with its option to keep files
byte for byte.
"""


def transfer_syntax_of(path: Path | str) -> UID:
    """The (0002,0010) Transfer Syntax UID of a Part 10 file."""
    return UID(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def by_transfer_syntax(paths: Sequence[Path]) -> dict[UID, list[Path]]:
    """``paths`` grouped by transfer syntax, in their order."""
    groups: dict[UID, list[Path]] = {}
    for path in paths:
        groups.setdefault(transfer_syntax_of(path), []).append(path)
    return groups


def _pixel_data_header(length: int, implicit: bool) -> bytes:
    """The (7FE0,0010) element header of ``length`` bytes of native OW pixel data."""
    tag = struct.pack("<HH", PIXEL_DATA_TAG >> 16, PIXEL_DATA_TAG & 0xFFFF)
    if implicit:
        return tag + struct.pack("<I", length)
    return tag + b"OW\x00\x00" + struct.pack("<I", length)


def _stream_pixels(fp: BinaryIO, chunks: Iterator[npt.NDArray[np.uint16]]) -> None:
    """Write each chunk's buffer as is (little endian, C order), without copying it."""
    for chunk in chunks:
        fp.write(np.ascontiguousarray(chunk, dtype="<u2").data)


# --------------------------------------------------------------------- conveniences


def make_large_multiframe(
    path: Path | str,
    size_bytes: int,
    *,
    rows: int = 512,
    cols: int = 512,
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> Path:
    """A Multi-frame Grayscale Word SC file with at least ``size_bytes`` of pixel data.

    The header is written by pydicom, then the Pixel Data element is appended
    and its frames streamed in ~16 MB chunks, so memory use stays small even
    for objects of several gigabytes (up to the 4 GiB element limit).
    """
    uid = UID(transfer_syntax)
    if uid not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise ValueError("large objects are written in Explicit or Implicit VR Little Endian")
    frame_bytes = rows * cols * 2
    frames = max(1, math.ceil(size_bytes / frame_bytes))
    if frames * frame_bytes > MAX_PIXEL_DATA_BYTES:
        raise ValueError(f"{frames * frame_bytes} bytes exceed the Pixel Data length limit")
    header = multiframe_header(study, series, frames=frames, rows=rows, cols=cols)
    header.file_meta.TransferSyntaxUID = uid
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as fp:
        dcmwrite(fp, header, enforce_file_format=True)
        fp.write(_pixel_data_header(frames * frame_bytes, uid == ImplicitVRLittleEndian))
        _stream_pixels(fp, iter_multiframe_chunks(frames, rows, cols, seed=seed))
    return target


Builder = Callable[..., FileDataset]


def _builders() -> dict[str, Builder]:
    """The builder of each modality :func:`make_study` knows."""
    return {
        "CT": ct_image,
        "MR": mr_image,
        "CR": cr_image,
        "US": us_multiframe,
        "SR": basic_text_sr,
        "RTSTRUCT": rt_structure_set,
        "SC": secondary_capture,
        "OT": multiframe_image,
    }


def make_study(
    directory: Path | str,
    n_instances: int,
    modality: str = "CT",
    *,
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """One study with one series of ``n_instances`` instances of ``modality``, on disk.

    ``modality`` is one of CT, MR, CR, US, SR, RTSTRUCT, SC (Secondary Capture)
    or OT (Multi-frame Grayscale Word SC). Files are named after the modality,
    the end of the series UID and the instance number.
    """
    builder = _builders().get(modality.upper())
    if builder is None:
        raise ValueError(f"unknown modality {modality!r}; use one of {sorted(_builders())}")
    study = study or StudySpec()
    series = series or SeriesSpec()
    folder = Path(directory)
    tail = series.series_instance_uid.rsplit(".", 1)[-1][-8:]
    paths = []
    for number in range(1, n_instances + 1):
        ds = builder(study, series, instance_number=number)
        name = f"{modality.upper()}_{tail}_{number:05d}.dcm"
        paths.append(write(ds, folder / name, transfer_syntax))
    return paths


def make_ct_series(
    directory: Path | str,
    n: int,
    rows: int = 512,
    cols: int = 512,
    *,
    study: StudySpec | None = None,
    series: SeriesSpec | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """``n`` CT slices of one series, fast: one template (encoded once) with new UIDs."""
    study = study or StudySpec()
    series = series or SeriesSpec()
    template = encoded(ct_image(study, series, rows=rows, cols=cols), transfer_syntax)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(1, n + 1):
        _renumber(template, number, z=(number - 1) * 2.5)
        path = folder / f"CT{number:06d}.dcm"
        dcmwrite(path, template, enforce_file_format=True)
        paths.append(path)
    return paths


def _renumber(ds: Dataset, number: int, z: float) -> None:
    """Give a CT slice a new SOP Instance UID, Instance Number and position."""
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], f"{z:.2f}"]
    ds.SliceLocation = f"{z:.2f}"


def mixed_set_specs() -> list[StudySpec]:
    """Four studies of three patients: a UTF-8 Czech name, a Latin-1 German one, ASCII."""
    dvorak = {
        "patient_name": "Dvořák^Antonín",
        "patient_id": "PAT-CZ-0001",
        "issuer_of_patient_id": "NEMOCNICE",
        "patient_birth_date": "19610908",
        "patient_sex": "M",
        "referring_physician_name": "Novák^Jan",
        "charset": "ISO_IR 192",
    }
    muller = {
        "patient_name": "Müller^Jürgen",
        "patient_id": "PAT-DE-0002",
        "issuer_of_patient_id": "KLINIKUM",
        "patient_birth_date": "19550312",
        "patient_sex": "M",
        "referring_physician_name": "Weiß^Käthe",
        "charset": "ISO_IR 100",
    }
    smith = {
        "patient_name": "Smith^Jane^Q",
        "patient_id": "PAT-US-0003",
        "issuer_of_patient_id": "GENERAL",
        "patient_birth_date": "19800229",
        "patient_sex": "F",
        "referring_physician_name": "Jones^Tom",
    }
    return [
        StudySpec(
            **dvorak,
            study_date="20240312",
            study_time="081500",
            accession_number="CZ24000101",
            study_id="101",
            study_description="CT hrudník / Thorax",
        ),
        StudySpec(
            **dvorak,
            study_date="20240618",
            study_time="140210",
            accession_number="CZ24000217",
            study_id="102",
            study_description="MR mozek",
        ),
        StudySpec(
            **muller,
            study_date="20230905",
            study_time="093000",
            accession_number="DE23004711",
            study_id="201",
            study_description="Röntgen Thorax",
        ),
        StudySpec(
            **smith,
            study_date="20250121",
            study_time="163045",
            accession_number="US25000042",
            study_id="301",
            study_description="US abdomen",
        ),
    ]


def make_mixed_set(directory: Path | str) -> list[Path]:
    """Seven objects of seven SOP classes, three patients, four studies, five syntaxes.

    In order: CT (Explicit VR LE) and an RT Structure Set on it (Implicit VR LE)
    for Dvořák^Antonín (ISO_IR 192); his MR (JPEG 2000 Lossless if an encoder is
    installed, else Explicit VR LE); Müller^Jürgen's (ISO_IR 100) CR (RLE
    Lossless) and Basic Text SR (Deflated Explicit VR LE); Smith^Jane^Q's US
    multi-frame (RLE Lossless) and Secondary Capture (Explicit VR LE).
    """
    ct_study, mr_study, cr_study, us_study = mixed_set_specs()
    folder = Path(directory)
    ct = ct_image(
        ct_study,
        SeriesSpec(series_description="Thorax 2.5 mm", series_number=2),
        rows=256,
        cols=256,
    )
    rt = rt_structure_set(
        ct_study, SeriesSpec(series_number=90, series_description="RT"), images=[ct]
    )
    mr = mr_image(mr_study, SeriesSpec(series_description="T1 SE ax", body_part_examined="HEAD"))
    cr = cr_image(cr_study, SeriesSpec(series_description="Thorax p.a."), rows=512, cols=416)
    sr = basic_text_sr(
        cr_study,
        SeriesSpec(series_number=99, series_description="Befund"),
        findings="Herz und Lunge unauffällig.",
        impression="Kein Befund.",
    )
    us = us_multiframe(us_study, SeriesSpec(body_part_examined="ABDOMEN"), frames=6)
    sc = secondary_capture(us_study, SeriesSpec(series_number=500, series_description="Report"))
    mr_syntax = JPEG2000Lossless if can_encode(JPEG2000Lossless) else ExplicitVRLittleEndian
    plan: list[tuple[str, Dataset, str]] = [
        ("01_ct.dcm", ct, ExplicitVRLittleEndian),
        ("02_rtstruct.dcm", rt, ImplicitVRLittleEndian),
        ("03_mr.dcm", mr, mr_syntax),
        ("04_cr.dcm", cr, RLELossless),
        ("05_sr.dcm", sr, DeflatedExplicitVRLittleEndian),
        ("06_us.dcm", us, RLELossless),
        ("07_sc.dcm", sc, ExplicitVRLittleEndian),
    ]
    return [write(ds, folder / name, syntax) for name, ds, syntax in plan]


# ---------------------------------------------------------------- synthetic headers

_FAMILY_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Lopez",
    "Lee",
    "Gonzalez",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Dvořák",
    "Müller",
    "Novák",
    "Ødegård",
    "Łukasiewicz",
    "Sánchez",
    "Björk",
    "O'Brien",
)
_GIVEN_NAMES = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Jiří",
    "Zoë",
    "François",
    "Ana",
    "Søren",
)
_DESCRIPTIONS = ("CT chest", "CT abdomen pelvis", "CT head", "CT angio", "CT spine")
_BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "HEART", "SPINE")


def _uid(*parts: object) -> str:
    """A deterministic ``2.25`` UID (UUID-derived) named by ``parts``."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(map(str, parts))).int}"


def _patient_name(patient: int) -> str:
    """A varied, deterministic ``Family^Given`` name; patient 0 is ASCII."""
    family = _FAMILY_NAMES[patient % len(_FAMILY_NAMES)]
    given = _GIVEN_NAMES[(patient // len(_FAMILY_NAMES) + patient) % len(_GIVEN_NAMES)]
    return f"{family}^{given}"


def _study_date(study: int) -> date:
    """A date spread over 2018-2025 (and not ordered by study number)."""
    return date(2018, 1, 1) + timedelta(days=(study * 7919) % 2920)


@lru_cache(maxsize=8)
def _study_elements(study: int, patient: int) -> tuple[DataElement, ...]:
    """The patient and study level elements of synthetic study ``study``, built once."""
    name = _patient_name(patient)
    day = _study_date(study).strftime("%Y%m%d")
    ds = Dataset()
    if not name.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day
    ds.StudyTime = f"{7 + study % 12:02d}{study * 7 % 60:02d}{study * 13 % 60:02d}"
    ds.AccessionNumber = f"A{study:09d}"
    ds.Modality = "CT"
    ds.ReferringPhysicianName = f"{_FAMILY_NAMES[study % 31]}^Referrer"
    ds.StudyDescription = _DESCRIPTIONS[study % len(_DESCRIPTIONS)]
    ds.PatientName = name
    ds.PatientID = f"P{patient:07d}"
    ds.IssuerOfPatientID = "SYNTH"
    ds.PatientBirthDate = f"{1930 + patient % 80}{1 + patient % 12:02d}{1 + patient % 28:02d}"
    ds.PatientSex = "MF"[patient % 2]
    ds.BodyPartExamined = _BODY_PARTS[study % len(_BODY_PARTS)]
    ds.StudyInstanceUID = _uid("study", study)
    ds.StudyID = str(study % 100000)
    ds.Rows = ds.Columns = 512
    return tuple(ds)


def _copy_element(element: DataElement) -> DataElement:
    """A new element sharing ``element``'s (immutable, already converted) value."""
    return DataElement(element.tag, element.VR, element.value, already_converted=True)


def synthetic_header(
    i: int,
    *,
    instances_per_series: int = 250,
    series_per_study: int = 1,
    studies_per_patient: int = 4,
) -> Dataset:
    """Instance ``i`` of a large synthetic CT archive: a header only, no pixel data.

    With the defaults, 1,000,000 instances are 4,000 studies of one 250-slice
    series each, for 1,000 patients; names, dates (2018-2025), accession
    numbers and UIDs are deterministic functions of ``i``. Non-ASCII names
    carry ``SpecificCharacterSet`` ISO_IR 192. Cheap: the study level elements
    are built once per study.
    """
    series = i // instances_per_series
    study = series // series_per_study
    ds = Dataset()
    for element in _study_elements(study, study // studies_per_patient):
        ds.add(_copy_element(element))
    for tag, vr, value in (
        (0x00080018, "UI", _uid("instance", i)),  # SOP Instance UID
        (0x0008103E, "LO", f"Axial {1 + series % 3 * 1.5:.1f} mm"),  # Series Description
        (0x0020000E, "UI", _uid("series", series)),  # Series Instance UID
        (0x00200011, "IS", 1 + series % series_per_study),  # Series Number
        (0x00200013, "IS", 1 + i % instances_per_series),  # Instance Number
    ):
        ds.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))
    return ds
