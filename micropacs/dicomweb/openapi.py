"""The OpenAPI 3.1 description of micropacs' HTTP routes: DICOMweb (PS3.18) and health.

One document describes every route any service serves: QIDO-RS (PS3.18 10.6),
WADO-RS (10.4: instances, metadata, frames, bulk data, rendered images,
thumbnails), WADO-URI (9), STOW-RS (10.5), ``/healthz``, ``/readyz``,
``/metrics`` and the document itself. A process publishes, at
:data:`OPENAPI_PATH`, the part of it that it serves (:func:`describe`), so an
ingest process alone describes STOW-RS and not QIDO-RS. Clients and fuzzers
such as schemathesis read it; like a DICOM conformance statement it names what
is served, never what is stored, so it is open to every caller.

Query parameters follow PS3.18 8.3.4 (``{attributeID}={value}``,
``includefield``, ``fuzzymatching``, ``limit``, ``offset``), 8.3.5.1
(``window``, ``viewport``, ``quality``) and 9.1.2 (WADO-URI); the media types
a route answers with are those its ``Accept`` header may ask for (8.7).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR

from micropacs.dicom import uids
from micropacs.dicom.levels import Level
from micropacs.dicomweb.qido import DEFAULT_KEYS, FUZZY_IGNORED
from micropacs.dicomweb.responses import DICOM_JSON, ROOT, WARNING

OPENAPI_PATH = "/openapi.json"
Document = dict[str, Any]

UID = {"type": "string", "pattern": f"^{uids.PATTERN}$", "maxLength": uids.MAX_LENGTH}
"""A UID as PS3.5 9.1 has it: digits and dots, at most 64 characters."""
_UID_ITEM = rf" *({uids.PATTERN}|\*)? *"
UID_LIST = {
    "type": "string",
    "pattern": f"^{_UID_ITEM}(,{_UID_ITEM})*$",
    "maxLength": uids.MAX_LENGTH,
}
"""A UID matching key: a list of UIDs, ``*`` or nothing (PS3.4 C.2.2.2.2, C.2.2.2.3)."""
_READ: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]
_OPEN: list[dict[str, list[str]]] = []
_PROBLEM = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_WARNING_HEADER = {"Warning": {"$ref": "#/components/headers/Warning"}}
MULTIPART = "multipart/related"
_BINARY = {"schema": {"type": "string", "format": "binary"}}

_MATCHING: dict[Level, tuple[str, ...]] = {
    Level.STUDY: ("PatientBirthDate",),
    Level.SERIES: ("StudyInstanceUID",),
    Level.IMAGE: ("SeriesInstanceUID",),
}
"""Keys beyond a level's defaults it matches on (PS3.18 Table 10.6.1-5)."""
_ATTRIBUTE = {
    "anyOf": [
        {"type": "string", "pattern": "^([0-9A-Fa-f]{8})?$"},
        {"enum": ["all", *sorted({key for keys in DEFAULT_KEYS.values() for key in keys})]},
    ],
    "description": "A tag (00100010), a keyword of the DICOM dictionary (PatientName), or"
    " all; an empty one is ignored.",
}
_NOT_MATCHED = ("RetrieveURL", "SpecificCharacterSet", "TimezoneOffsetFromUTC")
_FIXED_BY_PATH = {"StudyInstanceUID": "study", "SeriesInstanceUID": "series"}


def _problem(description: str) -> Document:
    return {"description": description, "headers": _WARNING_HEADER, "content": _PROBLEM}


COMPONENTS: Document = {
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A micropacs API token (`micropacs tokens add --role …`) or, with"
            " `MICROPACS_AUTH__BACKEND=oidc`, an OpenID Connect access token. Reading needs"
            " the viewer role, storing the operator role. A server bound to loopback with no"
            " authentication configured answers local clients without credentials.",
        },
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "A local user (`micropacs users add`), with"
            " `MICROPACS_AUTH__BACKEND=local`.",
        },
    },
    "headers": {
        "Warning": {
            "description": f"PS3.18 8.6.3. On an error: `{WARNING}`; on a QIDO-RS answer"
            f" asked for fuzzy matching: `{FUZZY_IGNORED}`.",
            "schema": {"type": "string"},
        },
    },
    "schemas": {
        "Problem": {
            "type": "object",
            "description": "Why the request was not served; the reason may quote the request.",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Attribute": {
            "type": "object",
            "description": "One attribute in the DICOM JSON model (PS3.18 F.2.2).",
            "required": ["vr"],
            "properties": {
                "vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "Value": {"type": "array"},
                "BulkDataURI": {"type": "string"},
                "InlineBinary": {"type": "string"},
            },
        },
        "Dataset": {
            "type": "object",
            "description": "A data set in the DICOM JSON model (PS3.18 F.2), keyed by tag.",
            "propertyNames": {"pattern": "^[0-9A-F]{8}$"},
            "additionalProperties": {"$ref": "#/components/schemas/Attribute"},
        },
        "Datasets": {"type": "array", "items": {"$ref": "#/components/schemas/Dataset"}},
    },
    "responses": {
        "BadRequest": _problem("A malformed UID, parameter or body."),
        "Unauthorized": {
            "description": "No credentials, or credentials that do not check out.",
            "headers": {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "RFC 9110 11.6.1"}
            },
            "content": _PROBLEM,
        },
        "Forbidden": {"description": "The caller's role may not do this.", "content": _PROBLEM},
        "NotFound": _problem("Nothing is stored there."),
        "NotAcceptable": _problem("The Accept header names nothing micropacs can send."),
        "HeadTooLarge": _problem(
            "The request line and headers are longer than MICROPACS_HTTP__MAX_HEADER_BYTES."
        ),
        "Unavailable": _problem("A backend (catalog, object store, event bus) is unavailable."),
    },
}


def _ref(name: str) -> Document:
    return {"$ref": f"#/components/responses/{name}"}


def _path(name: str, description: str, schema: Document = UID) -> Document:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: Document | None = None) -> Document:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or {"type": "string"},
    }


_FRAME = "0*[1-9][0-9]{0,8}"
_ONE_FRAME = _path(
    "frames",
    "The frame to render, from 1 (PS3.18 10.4.1.1.4).",
    {"type": "string", "pattern": f"^{_FRAME}$"},
)
_PATH_PARAMETERS = {
    "study": _path("study", "StudyInstanceUID"),
    "series": _path("series", "SeriesInstanceUID"),
    "instance": _path("instance", "SOPInstanceUID"),
    "frames": _path(
        "frames",
        "Frame numbers from 1, comma-separated; each served once (PS3.18 10.4.1.1.3).",
        {"type": "string", "pattern": f"^{_FRAME}(,{_FRAME})*$"},
    ),
    "tag": _path(
        "tag",
        "The tag of the bulk data: only Pixel Data, 7FE00010, is served.",
        {"type": "string", "pattern": "^([0-9A-Fa-f]{8})?$"},
    ),
}


def _parameters(path: str) -> list[Document]:
    found = [p for name, p in _PATH_PARAMETERS.items() if "{" + name + "}" in path]
    return [
        _ONE_FRAME if p["name"] == "frames" and path.endswith("/rendered") else p for p in found
    ]


def _operation(
    summary: str, responses: Document, *, security: list[Any] = _READ, **more: Any
) -> Document:
    common = {"401": _ref("Unauthorized"), "403": _ref("Forbidden")} if security else {}
    return {
        "summary": summary,
        "security": security,
        "responses": {**responses, **common, "431": _ref("HeadTooLarge")},
        **more,
    }


def _errors(*codes: str) -> Document:
    names = {"400": "BadRequest", "404": "NotFound", "406": "NotAcceptable", "503": "Unavailable"}
    return {code: _ref(names[code]) for code in codes}


def _search(level: Level, path: str) -> Document:
    fixed = {name for name, keyword in _FIXED_BY_PATH.items() if "{" + keyword + "}" in path}
    keys = [*DEFAULT_KEYS[level], *_MATCHING[level]]
    if level is not Level.STUDY:
        keys += [*DEFAULT_KEYS[Level.STUDY], *_MATCHING[Level.STUDY]]  # PS3.18 10.6.1.2
    matching = [
        _query(
            key,
            f"Matches {key} as C-FIND does (PS3.4 C.2.2.2): wildcards, ranges, lists.",
            UID_LIST if dictionary_VR(key) == "UI" else None,
        )
        for key in dict.fromkeys(keys)
        if key not in (*_NOT_MATCHED, *fixed)
    ]
    includefield = _query(
        "includefield",
        "More attributes to return, by keyword or tag, comma-separated; `all` for every"
        " attribute held (PS3.18 8.3.4.3).",
        {"type": "array", "items": _ATTRIBUTE},
    )
    control = [
        {**includefield, "style": "form", "explode": False},
        _query("fuzzymatching", "Accepted; matching stays literal (8.3.4.1).", {"type": "boolean"}),
        _query("limit", "At most this many matches (8.3.4.4).", {"type": "integer", "minimum": 0}),
        _query("offset", "Skip this many matches.", {"type": "integer", "minimum": 0}),
    ]
    return {
        "get": _operation(
            f"QIDO-RS: search for {level.name.lower()}s (PS3.18 10.6)",
            {
                "200": {
                    "description": "The matches, each with its RetrieveURL.",
                    "headers": _WARNING_HEADER,
                    "content": {DICOM_JSON: {"schema": {"$ref": "#/components/schemas/Datasets"}}},
                },
                "204": {"description": "Nothing matched.", "headers": _WARNING_HEADER},
                **_errors("400", "503"),
            },
            parameters=[*_parameters(path), *matching, *control],
        )
    }


def _retrieve(summary: str, path: str, content: Document, **more: Any) -> Document:
    return {
        "get": _operation(
            summary,
            {
                "200": {"description": summary, "content": content},
                **_errors("400", "404", "406", "503"),
            },
            parameters=[*_parameters(path), *more.pop("parameters", [])],
            **more,
        )
    }


_PARTS = {MULTIPART: {**_BINARY, "x-parts": "application/dicom or frames"}}
_IMAGES = {"image/jpeg": _BINARY, "image/png": _BINARY}
_DECIMAL = r"[0-9]+(\.[0-9]+)?"
_SIDE = "([1-9][0-9]{0,2}|[1-7][0-9]{3}|80[0-9]{2}|81[0-8][0-9]|819[0-2])"
"""1 to 8192 pixels: the largest viewport rendered."""
_RENDERING = [
    _query(
        "window",
        "`center,width[,linear]` (PS3.18 8.3.5.1.4); else the object's own window.",
        {"type": "string", "pattern": rf"^-?{_DECIMAL},[1-9][0-9]*(\.[0-9]+)?(,linear)?$"},
    ),
    _query(
        "viewport",
        "`width,height`: the image fitted in it, aspect kept (8.3.5.1.3).",
        {"type": "string", "pattern": f"^{_SIDE},{_SIDE}$"},
    ),
    _query(
        "quality", "JPEG quality (8.3.5.1.2).", {"type": "integer", "minimum": 1, "maximum": 100}
    ),
]


def _wado_rs() -> Document:
    study = f"{ROOT}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"
    paths: Document = {}
    for name, path in (("study", study), ("series", series), ("instance", instance)):
        paths[path] = _retrieve(
            f'WADO-RS: the {name}\'s instances as multipart/related; type="application/dicom"'
            " (PS3.18 10.4.1.1.1); the Accept header's transfer-syntax picks the syntax",
            path,
            _PARTS,
        )
        paths[f"{path}/metadata"] = _retrieve(
            f"WADO-RS: the {name}'s metadata (PS3.18 10.4.1.1.2)",
            path,
            {DICOM_JSON: {"schema": {"$ref": "#/components/schemas/Datasets"}}},
        )
        paths[f"{path}/metadata"]["get"]["responses"]["200"]["headers"] = {
            "ETag": {"schema": {"type": "string"}}
        }
        paths[f"{path}/metadata"]["get"]["responses"]["304"] = {
            "description": "The metadata matches the request's If-None-Match.",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        }
        paths[f"{path}/thumbnail"] = _retrieve(
            f"WADO-RS: a thumbnail of the {name} (its middle instance), 128 pixels unless a"
            " viewport is asked (PS3.18 10.4.1.1.5)",
            path,
            _IMAGES,
            parameters=_RENDERING,
        )
    frames = f"{instance}/frames/{{frames}}"
    paths[frames] = _retrieve(
        "WADO-RS: frames, one part each, raw or as stored by the Accept header (10.4.1.1.3)",
        frames,
        _PARTS,
    )
    bulk = f"{instance}/bulkdata/{{tag}}"
    paths[bulk] = _retrieve("WADO-RS: the instance's pixel data (PS3.18 10.4.1.1.3)", bulk, _PARTS)
    for path in (f"{instance}/rendered", f"{frames}/rendered"):
        paths[path] = _retrieve(
            "WADO-RS: one frame rendered (PS3.18 10.4.1.1.4)", path, _IMAGES, parameters=_RENDERING
        )
    return paths


def _wado_uri() -> Document:
    def uid(name: str, what: str) -> Document:
        return {**_query(name, what, UID), "required": True}

    parameters = [
        {
            **_query("requestType", "Always WADO.", {"type": "string", "enum": ["WADO"]}),
            "required": True,
        },
        uid("studyUID", "StudyInstanceUID"),
        uid("seriesUID", "SeriesInstanceUID"),
        uid("objectUID", "SOPInstanceUID"),
        _query(
            "contentType",
            "image/jpeg (the default), image/png or application/dicom (PS3.18 9.1.2.1.1).",
            {"type": "string", "enum": ["image/jpeg", "image/png", "application/dicom"]},
        ),
        _query("transferSyntax", "The syntax of application/dicom.", UID),
        _query("frameNumber", "The frame to render.", {"type": "integer", "minimum": 1}),
        _query("rows", "Rendered rows.", {"type": "integer", "minimum": 1, "maximum": 8192}),
        _query("columns", "Rendered columns.", {"type": "integer", "minimum": 1, "maximum": 8192}),
        _query("windowCenter", "With windowWidth, the VOI window.", {"type": "number"}),
        _query(
            "windowWidth", "With windowCenter, the VOI window.", {"type": "number", "minimum": 1}
        ),
        _query("imageQuality", "JPEG quality.", {"type": "integer", "minimum": 1, "maximum": 100}),
    ]
    summary = "WADO-URI: one instance, rendered or as stored (PS3.18 9)"
    content = {"application/dicom": _BINARY, **_IMAGES}
    return {f"{ROOT}/wado": _retrieve(summary, "", content, parameters=parameters)}


def _stow(path: str) -> Document:
    answer = {
        DICOM_JSON: {
            "schema": {
                "$ref": "#/components/schemas/Dataset",
                "description": "ReferencedSOPSequence and FailedSOPSequence (PS3.18 10.5.3).",
            }
        }
    }
    return {
        "post": _operation(
            "STOW-RS: store instances (PS3.18 10.5); needs the operator role",
            {
                "200": {"description": "Every instance stored.", "content": answer},
                "202": {"description": "Some instances refused.", "content": answer},
                "409": {"description": "No instance stored.", "content": answer},
                "408": _problem("The body arrived too slowly."),
                "413": _problem(
                    "The body is over MICROPACS_HTTP__STOW_MAX_BYTES or has too many parts."
                ),
                "415": _problem('Not multipart/related; type="application/dicom".'),
                **_errors("400", "503"),
            },
            parameters=_parameters(path),
            requestBody={
                "required": True,
                "description": 'multipart/related; type="application/dicom"; boundary=…, one'
                " Part 10 file per part.",
                "content": {MULTIPART: _BINARY},
            },
        )
    }


WORKLIST_ITEMS = "/api/worklist/items"
SCHEDULE_WORKLIST_ITEM = "scheduleWorklistItem"
"""The POST's operation id: the checks of an item (the VR of each of the dictionary's
attributes, PS3.5 6.2) go beyond what its JSON schema says, so a body valid by the
schema may still get 400 with the reason."""
_ITEM_ID = _path("id", "The item's id, as its Location names it.", {"type": "string"})
_ITEM = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["id", "status", "dataset"],
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "description": "ScheduledProcedureStepStatus"},
                "updated_at": {"type": "string"},
                "dataset": {"$ref": "#/components/schemas/Dataset"},
            },
        }
    }
}


_WORKLIST_FILTERS: tuple[tuple[str, Document | None], ...] = (
    ("PatientID", None),
    ("IssuerOfPatientID", None),
    ("PatientName", None),
    ("AccessionNumber", None),
    ("RequestedProcedureID", None),
    ("StudyInstanceUID", UID_LIST),
    ("ScheduledStationAETitle", None),
    ("Modality", None),
    ("ScheduledProcedureStepStartDate", None),
    ("ScheduledProcedureStepStartTime", None),
    ("ScheduledPerformingPhysicianName", None),
    ("ScheduledProcedureStepID", None),
)
"""The indexed matching keys (PS3.4 K.6.1.2.1); any other attribute of the item filters too."""


def _worklist() -> Document:
    """The worklist service's API: scheduling without a RIS (docs/worklist.md)."""
    filters = [
        _query(
            key,
            f"Matches {key} as C-FIND does (PS3.4 C.2.2.2): wildcards, ranges, lists; any other"
            " attribute of the item, by keyword or tag, filters too.",
            schema,
        )
        for key, schema in _WORKLIST_FILTERS
    ]
    filters += [
        _query("status", "The step's ScheduledProcedureStepStatus (every status if absent)."),
        _query("limit", "At most this many items.", {"type": "integer", "minimum": 0}),
        _query("offset", "Skip this many items.", {"type": "integer", "minimum": 0}),
    ]
    return {
        WORKLIST_ITEMS: {
            "get": _operation(
                "Worklist items matching the filters, by scheduled start",
                {
                    "200": {
                        "description": "The items.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": _ITEM["application/json"]}
                            }
                        },
                    },
                    **_errors("400", "503"),
                },
                parameters=filters,
            ),
            "post": _operation(
                "Schedule one item (DICOM JSON, one ScheduledProcedureStepSequence item);"
                " needs the operator role",
                {
                    "201": {
                        "description": "Published; the worklist shows it once indexed.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": _ITEM,
                    },
                    "413": _problem("Over MICROPACS_WORKLIST__API_MAX_ITEM_BYTES."),
                    "415": _problem("Not application/dicom+json or application/json."),
                    **_errors("400", "503"),
                },
                operationId=SCHEDULE_WORKLIST_ITEM,
                requestBody={
                    "required": True,
                    "content": {
                        DICOM_JSON: {"schema": {"$ref": "#/components/schemas/Dataset"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/Dataset"}},
                    },
                },
            ),
        },
        f"{WORKLIST_ITEMS}/{{id}}": {
            "get": _operation(
                "One worklist item",
                {"200": {"description": "The item.", "content": _ITEM}, **_errors("404", "503")},
                parameters=[_ITEM_ID],
            ),
            "delete": _operation(
                "Remove one worklist item; needs the operator role",
                {"204": {"description": "Removal published."}, **_errors("404", "503")},
                parameters=[_ITEM_ID],
            ),
        },
    }


ROUTER_QUEUES = "/router/queues"
_DESTINATION = _path(
    "destination", "The destination's AE title.", {"type": "string", "minLength": 1}
)
_ENTRY_IDS = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 64},
    "maxItems": 10_000,
}
_QUEUE = {
    "type": "object",
    "required": ["destination", "waiting", "dead"],
    "properties": {
        "destination": {"type": "string"},
        "waiting": {"type": "integer"},
        "dead": {"type": "integer"},
        "oldest_waiting_at": {"type": ["string", "null"]},
        "oldest_waiting_seconds": {"type": "number"},
        "failing_since": {"type": ["string", "null"]},
    },
}
_ENTRY = {
    "type": "object",
    "required": ["id", "state", "sop_instance_uid", "attempts"],
    "properties": {
        "id": {"type": "string"},
        "state": {"enum": ["waiting", "dead"]},
        "rule": {"type": "string"},
        "sop_class_uid": {"type": "string"},
        "sop_instance_uid": {"type": "string"},
        "series_instance_uid": {"type": "string"},
        "study_instance_uid": {"type": "string"},
        "transfer_syntax": {"type": "string"},
        "size": {"type": "integer"},
        "enqueued_at": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "next_attempt_at": {"type": ["string", "null"]},
        "last_error": {"type": "string"},
    },
}


def _json(schema: Document) -> Document:
    return {"application/json": {"schema": schema}}


def _router() -> Document:
    """The router's queues (docs/routing.md): viewers list, operators retry and cancel."""
    count = {"type": "object", "additionalProperties": {"type": "integer"}}
    too_large = _problem("The body is over 1 MiB.")
    return {
        ROUTER_QUEUES: {
            "get": _operation(
                "Every destination's forwarding queue",
                {
                    "200": {
                        "description": "The queues.",
                        "content": _json({"type": "array", "items": _QUEUE}),
                    },
                    **_errors("503"),
                },
            )
        },
        f"{ROUTER_QUEUES}/{{destination}}": {
            "get": _operation(
                "A page of one destination's queue, oldest first",
                {
                    "200": {
                        "description": "The entries.",
                        "content": _json({"type": "array", "items": _ENTRY}),
                    },
                    **_errors("400", "503"),
                },
                parameters=[
                    _DESTINATION,
                    _query(
                        "state",
                        "waiting, dead or all (the default).",
                        {"enum": ["waiting", "dead", "all"]},
                    ),
                    _query(
                        "limit",
                        "At most this many (1,000 at most).",
                        {"type": "integer", "minimum": 0},
                    ),
                    _query("offset", "Skip this many.", {"type": "integer", "minimum": 0}),
                ],
            )
        },
        f"{ROUTER_QUEUES}/{{destination}}/retry": {
            "post": _operation(
                "Make entries (every dead one when none is named) due now; needs the operator role",
                {
                    "200": {"description": "How many changed.", "content": _json(count)},
                    "413": too_large,
                    **_errors("400", "503"),
                },
                parameters=[_DESTINATION],
                requestBody={
                    "required": False,
                    "content": _json({"type": "object", "properties": {"entries": _ENTRY_IDS}}),
                },
            )
        },
        f"{ROUTER_QUEUES}/{{destination}}/cancel": {
            "post": _operation(
                "Remove the named entries, or every one of a state; needs the operator role",
                {
                    "200": {"description": "How many were removed.", "content": _json(count)},
                    "413": too_large,
                    **_errors("400", "503"),
                },
                parameters=[_DESTINATION],
                requestBody={
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "properties": {
                                "entries": _ENTRY_IDS,
                                "state": {"enum": ["waiting", "dead", "all"]},
                            },
                            # Nothing is assumed: a body must name entries or a state.
                            "anyOf": [
                                {"required": ["state"]},
                                {
                                    "required": ["entries"],
                                    "properties": {"entries": {"minItems": 1}},
                                },
                            ],
                        }
                    ),
                },
            )
        },
    }


def _health() -> Document:
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    json_status = {"application/json": {"schema": status}}
    return {
        "/healthz": {
            "get": _operation(
                "Alive",
                {"200": {"description": "The process runs.", "content": json_status}},
                security=_OPEN,
            )
        },
        "/readyz": {
            "get": _operation(
                "Ready",
                {
                    "200": {"description": "Every backend reachable.", "content": json_status},
                    "503": {"description": "What failed.", "content": json_status},
                },
                security=_OPEN,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics; open unless MICROPACS_AUTH__METRICS_OPEN=false",
                {
                    "200": {
                        "description": "The exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=[{}, *_READ],
            )
        },
        OPENAPI_PATH: {
            "get": _operation(
                "This description, of the routes this process serves",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                security=_OPEN,
            )
        },
    }


def document() -> Document:
    """Every route micropacs serves, described in OpenAPI 3.1."""
    paths: Document = _health()
    for level, path in (
        (Level.STUDY, f"{ROOT}/studies"),
        (Level.SERIES, f"{ROOT}/series"),
        (Level.SERIES, f"{ROOT}/studies/{{study}}/series"),
        (Level.IMAGE, f"{ROOT}/instances"),
        (Level.IMAGE, f"{ROOT}/studies/{{study}}/instances"),
        (Level.IMAGE, f"{ROOT}/studies/{{study}}/series/{{series}}/instances"),
    ):
        paths[path] = _search(level, path)
    paths.update(_wado_rs())
    paths.update(_wado_uri())
    paths.update(_worklist())
    paths.update(_router())
    for path in (f"{ROOT}/studies", f"{ROOT}/studies/{{study}}"):
        paths.setdefault(path, {}).update(_stow(path))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "micropacs",
            "version": "1",
            "description": "DICOMweb (PS3.18) and the health routes of a micropacs process.",
        },
        "security": _READ,
        "paths": dict(sorted(paths.items())),
        "components": copy.deepcopy(COMPONENTS),
    }


def operations(described: Document) -> set[tuple[str, str]]:
    """The ``(path, METHOD)`` pairs a document describes."""
    return {(path, method.upper()) for path, item in described["paths"].items() for method in item}


def describe(served: Iterable[tuple[str, Iterable[str]]]) -> Document:
    """The part of :func:`document` that describes ``served``: ``(path, methods)`` pairs.

    HEAD is implied by GET (RFC 9110 9.3.2), as Starlette serves it, so is not listed.
    """
    wanted = {(path, method.lower()) for path, methods in served for method in methods}
    full = document()
    paths = {
        path: {method: op for method, op in item.items() if (path, method) in wanted}
        for path, item in full["paths"].items()
    }
    full["paths"] = {path: item for path, item in paths.items() if item}
    return full
