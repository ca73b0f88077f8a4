"""What every DICOMweb route answers with: the root, the JSON media type, errors (PS3.18 8.6)."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse, Response

from micropacs.errors import http_status

log = logging.getLogger(__name__)

ROOT = "/dicom-web"
DICOM_JSON = "application/dicom+json"


def problem(status: int, reason: str) -> Response:
    """An HTTP status with its reason in the JSON body and in a ``Warning: 299`` header."""
    if status >= 500:
        log.error("DICOMweb request failed", extra={"reason": reason})
    return JSONResponse(
        {"error": reason}, status_code=status, headers={"Warning": f'299 micropacs "{reason}"'}
    )


def error_response(exc: BaseException) -> Response:
    """The PS3.18 status of a micropacs error (:func:`micropacs.errors.http_status`)."""
    return problem(http_status(exc), str(exc) or type(exc).__name__)
