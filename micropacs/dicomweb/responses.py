"""What every DICOMweb route answers with: the root, the JSON media type, errors (PS3.18 8.6).

Nothing a client sent goes into a response header: a reason names the request's
values, so it goes in the JSON body only, and headers carry fixed ASCII text.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from micropacs.errors import http_status

log = logging.getLogger(__name__)

ROOT = "/dicom-web"
DICOM_JSON = "application/dicom+json"
WARNING = '299 micropacs "The request was not processed; the reason is in the body"'
"""The ``Warning`` header of every error (PS3.18 8.6.3): fixed text, never the request's."""


def problem(status: int, reason: str) -> Response:
    """An HTTP status with its reason in the JSON body and a fixed ``Warning: 299`` header."""
    if status >= 500:
        log.error("DICOMweb request failed", extra={"reason": reason})
    return JSONResponse({"error": reason}, status_code=status, headers={"Warning": WARNING})


def error_response(exc: BaseException) -> Response:
    """The PS3.18 status of a micropacs error (:func:`micropacs.errors.http_status`)."""
    return problem(http_status(exc), str(exc) or type(exc).__name__)


def public_root(request: Request) -> str:
    """The DICOMweb root as clients reach it, for RetrieveURLs and BulkDataURIs.

    From the configured public URL the server sets on the app once bound
    (:func:`micropacs.http.public_url`); an app served otherwise (in-process tests)
    falls back on the address of the socket the request arrived on. Never the Host
    header, which the client chooses.
    """
    base = getattr(request.app.state, "public_url", None)
    if not isinstance(base, str):
        host, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{host}]" if ":" in str(host) else host
        base = f"{request.scope.get('scheme', 'http')}://{host}:{port}"
    return base.rstrip("/") + ROOT
