"""Coercions (micropacs.routing.coercion): set, copy and remove made to a dataset in order, and
to a Part 10 file whose header is written again while its pixel data is copied as bytes."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from micropacs.dicom.header_json import header_of
from micropacs.dicom.json_model import to_json
from micropacs.errors import InvalidInput, InvalidSettings
from micropacs.routing.coercion import Coercion, apply, coerce_file
from micropacs.routing.rules import parse_rules
from tests import dicomdata

PHILIPS = "Philips Imaging DD 001"
ISSUER = "00100021"
OTHER_IDS = "00101000"
INSTITUTION = "00080080"
INSTANCE_NUMBER = "00200013"
SLICE_NUMBER_MR = "2001100A"
IMAGE_ENHANCED = "20011006"


def philips_mr() -> Dataset:
    """An MR image with Philips' private block (2001,10xx), as their scanners send."""
    ds = dicomdata.mr_image(rows=64, cols=64, instance_number=3)
    block = ds.private_block(0x2001, PHILIPS, create=True)
    block.add_new(0x0A, "IS", "17")
    return ds


def saved(ds: Dataset, path: Path, syntax: str | None = None) -> Path:
    if syntax == str(RLELossless):
        ds.compress(RLELossless)
    elif syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


FIX = [
    Coercion("set", ISSUER, "HOSPITAL_A"),
    Coercion("copy", OTHER_IDS, source="00100020"),
    Coercion("remove", INSTITUTION),
    Coercion("copy", INSTANCE_NUMBER, source=SLICE_NUMBER_MR),
    Coercion("set", IMAGE_ENHANCED, "NO"),
]


def test_set_copy_and_remove_are_made_in_order_with_the_dictionarys_vr() -> None:
    ds = philips_mr()
    apply(ds, FIX)
    assert ds.IssuerOfPatientID == "HOSPITAL_A"
    assert ds[0x00100021].VR == "LO"
    assert ds.OtherPatientIDs == ds.PatientID
    assert "InstitutionName" not in ds
    assert ds.InstanceNumber == 17  # the private Slice Number MR into the standard attribute
    assert ds[0x00200013].VR == "IS"
    enhanced = ds[0x20011006]
    assert (enhanced.VR, enhanced.value) == ("CS", "NO")  # the private dictionary's VR


def test_a_later_coercion_sees_what_an_earlier_one_made() -> None:
    ds = philips_mr()
    apply(
        ds,
        [
            Coercion("set", "00100020", "NEW-ID"),
            Coercion("copy", OTHER_IDS, source="00100020"),
            Coercion("remove", "00100020"),
            Coercion("copy", "00100030", source="00100020"),  # from an absent one: nothing
        ],
    )
    assert ds.OtherPatientIDs == "NEW-ID"
    assert "PatientID" not in ds
    assert ds.PatientBirthDate == dicomdata.StudySpec().patient_birth_date


def test_numbers_and_several_values_take_their_vr() -> None:
    ds = philips_mr()
    apply(
        ds,
        [
            Coercion("set", "00280030", "0.5\\0.5"),  # Pixel Spacing, DS, two values
            Coercion("set", "00280106", "3"),  # Smallest Image Pixel Value, US or SS
            Coercion("set", "00181030", ""),  # an empty Protocol Name
        ],
    )
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.5]
    assert ds.SmallestImagePixelValue == 3
    assert ds.ProtocolName == ""


@pytest.mark.parametrize("syntax", [None, str(ImplicitVRLittleEndian), str(RLELossless)], ids=str)
def test_a_coerced_file_keeps_its_syntax_meta_and_pixel_bytes(
    tmp_path: Path, syntax: str | None
) -> None:
    source = saved(philips_mr(), tmp_path / "in.dcm", syntax)
    original = dcmread(source)
    out = tmp_path / "out.dcm"
    digest = coerce_file(source, FIX, out)
    data = out.read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    coerced = dcmread(out)
    assert coerced.file_meta == original.file_meta
    assert coerced.PixelData == original.PixelData
    # Everything from Pixel Data on is the received bytes.
    tail = source.read_bytes()
    start = tail.index(b"\xe0\x7f\x10\x00")
    assert data.endswith(tail[start:])
    assert coerced.IssuerOfPatientID == "HOSPITAL_A"
    assert "InstitutionName" not in coerced
    header = header_of(out)
    assert header.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
    assert header.json[ISSUER] == {"vr": "LO", "Value": ["HOSPITAL_A"]}
    assert header.json[INSTANCE_NUMBER] == {"vr": "IS", "Value": [17]}


def test_a_deflated_file_is_written_again_whole(tmp_path: Path) -> None:
    source = saved(philips_mr(), tmp_path / "in.dcm", str(DeflatedExplicitVRLittleEndian))
    out = tmp_path / "out.dcm"
    coerce_file(source, FIX, out)
    coerced = dcmread(out)
    assert coerced.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert coerced.IssuerOfPatientID == "HOSPITAL_A"
    assert coerced.PixelData == dcmread(source).PixelData


def test_a_large_objects_pixel_data_is_never_held_in_memory(tmp_path: Path) -> None:
    ds = dicomdata.ct_image(rows=64, cols=64)
    ds.PixelData = bytes(64 * 1024 * 1024)  # a 64 MiB object
    ds.Rows = ds.Columns = 4096
    source = saved(ds, tmp_path / "in.dcm")
    del ds
    out = tmp_path / "out.dcm"
    tracemalloc.start()
    try:
        coerce_file(source, FIX, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert out.stat().st_size > 64 * 1024 * 1024


def test_rules_list_the_coercions_of_the_matching_rules_in_order() -> None:
    rules = parse_rules(
        "rules:\n"
        "  - name: issuer\n"
        "    match: {calling_ae: MR_*}\n"
        "    coerce: [{set: IssuerOfPatientID, value: HOSPITAL_A}]\n"
        "  - name: forward-only\n"
        "    forward: [{destination: WS1}]\n"
        "  - name: radiotherapy\n"
        "    match: {ae_group: radiotherapy, modality: MR}\n"
        "    coerce: [{remove: InstitutionAddress}, {copy: PatientID, to: OtherPatientIDs}]\n"
    )
    header = to_json(philips_mr())
    mr = "1.2.840.10008.5.1.4.1.1.4"
    assert rules.coerces
    assert rules.coercions(header, mr, "CT01", "MICROPACS", "") == []
    assert [c.action for c in rules.coercions(header, mr, "MR_PHILIPS", "MICROPACS", "")] == ["set"]
    both = rules.coercions(header, mr, "MR_PHILIPS", "MICROPACS", "radiotherapy")
    assert [(c.action, c.tag) for c in both] == [
        ("set", ISSUER),
        ("remove", "00080081"),  # InstitutionAddress
        ("copy", OTHER_IDS),
    ]
    assert not parse_rules("rules:\n  - {name: f, forward: [{destination: WS1}]}\n").coerces


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - {name: b, coerce: [{set: Rows, value: many}]}\n",
            "coerce[0].value: 'many' is not a value of VR US",
        ),
        (
            "rules:\n  - {name: b, coerce: [{remove: PixelData}]}\n",
            "coerce[0].remove: PixelData is pixel data or after it",
        ),
        (
            "rules:\n  - {name: b, coerce: [{copy: FFFCFFFC, to: PatientComments}]}\n",
            "coerce[0].copy: FFFCFFFC is pixel data or after it",
        ),
    ],
)
def test_what_a_coercion_cannot_do_is_refused_at_start(text: str, expected: str) -> None:
    with pytest.raises(InvalidSettings) as raised:
        parse_rules(text)
    assert expected in str(raised.value)


def test_a_copied_value_that_is_no_value_of_its_new_attribute_refuses_the_object(
    tmp_path: Path,
) -> None:
    source = saved(philips_mr(), tmp_path / "in.dcm")
    with pytest.raises(InvalidInput, match="is not a value of VR US"):
        coerce_file(source, [Coercion("copy", "00280010", source="00100020")], tmp_path / "o")
