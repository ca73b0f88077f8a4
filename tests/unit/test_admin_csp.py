"""The web UI's Content-Security-Policy: images from its own origin, and from the origin of
a DICOMweb named by MICROPACS_ADMIN__DICOMWEB_URL (the thumbnails), nothing else."""

from __future__ import annotations

from services.admin.web.templating import headers, image_origin


def images(policy: str) -> str:
    return next(part.strip() for part in policy.split(";") if part.strip().startswith("img-src"))


def test_images_come_from_the_pages_own_origin_by_default() -> None:
    policy = headers()["Content-Security-Policy"]
    assert images(policy) == "img-src 'self' data: blob:"
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy


def test_a_separate_dicomweb_origin_is_allowed_for_images_only() -> None:
    origin = image_origin("http://127.0.0.1:8080/dicom-web")
    assert origin == "http://127.0.0.1:8080"
    assert image_origin("https://[fd00::5]:8443/dicom-web") == "https://[fd00::5]:8443"
    policy = headers([origin])["Content-Security-Policy"]
    assert images(policy) == "img-src 'self' data: blob: http://127.0.0.1:8080"
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy


def test_a_path_or_another_scheme_adds_no_origin() -> None:
    for url in (
        "",
        "/dicom-web",
        "javascript:alert(1)",
        "ftp://host/dicom-web",
        "http://host; script-src *",
        "https://user@host/dicom-web",
    ):
        assert image_origin(url) == "", url
    assert images(headers([""])["Content-Security-Policy"]) == "img-src 'self' data: blob:"
