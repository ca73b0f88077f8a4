"""UID validation (PS3.5 9.1)."""

from __future__ import annotations

import pytest

from micropacs.dicom.uids import is_valid_uid, require_uid
from micropacs.errors import InvalidUid


@pytest.mark.parametrize("uid", ["1.2.3", "0", "1.2.840.10008.1.2.1", "2.25." + "9" * 58, "1.0.2"])
def test_valid(uid: str) -> None:
    assert is_valid_uid(uid)
    assert require_uid(uid, "X") == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "1.02",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.a",
        "1.2.3/../x",
        "../../etc/passwd",
        "1.2.*",
        "1.2.3 4",
        "1." + "2" * 64,
        "-1.2",
        "1.2\\1.3",
    ],
)
def test_invalid(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUid):
        require_uid(uid, "StudyInstanceUID")


def test_padding_is_removed_and_missing_is_named() -> None:
    assert require_uid("1.2.3\x00", "SOPInstanceUID") == "1.2.3"
    with pytest.raises(InvalidUid, match="SOPInstanceUID is missing"):
        require_uid(None, "SOPInstanceUID")
    with pytest.raises(InvalidUid, match="not a valid UID"):
        require_uid("1.02", "SeriesInstanceUID")
