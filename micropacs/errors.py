"""The one error hierarchy of micropacs.

Every error a service can meet is a :class:`MicropacsError`. Each knows
whether retrying the same operation later may succeed (``retryable``), and
maps to exactly one DIMSE status (PS3.4 Annex B/C, PS3.7 Annex C) and one
HTTP status (PS3.18 8.5)::

    MicropacsError
    ├── InvalidInput              the request itself is wrong; never retryable
    │   ├── NotDicom              not a DICOM dataset, or truncated     -> 0xC000 / 400
    │   ├── InvalidUid            missing or malformed UID (PS3.5 9.1)   -> 0xA900 / 400
    │   ├── InvalidIdentifier     a query identifier we cannot match     -> 0xA900 / 400
    │   ├── StudyMismatch         STOW-RS instance of another study      -> 0xC409 / 409
    │   ├── UnsupportedTransfer   cannot convert to what the peer takes  -> 0xA900 / 406
    │   ├── RequestTooLarge       body or part count over a limit        -> 0xA700 / 413
    │   │   └── QueryTooBroad     a query examining too many records     -> 0xA700 / 413
    │   ├── RequestTimeout        the client sent too slowly             -> 0xC000 / 408
    │   └── InvalidSettings       a setting or a file it names is wrong: no start
    ├── NotFound                  unknown instance, node or destination
    │   └── UnknownDestination    C-MOVE destination not in the registry -> 0xA801 / 404
    ├── Conflict                  an instance with that UID differs      -> 0xA900 / 409
    └── Unavailable               a backend is down or full; retryable   -> 0xA700 / 503
        ├── BlobStoreUnavailable
        ├── EventBusUnavailable
        └── CatalogUnavailable

Protocol handlers catch :class:`MicropacsError` and answer with
:func:`dimse_status` or :func:`http_status`; anything else is a bug, logged
with its traceback and answered 0xC001 / 500: a failure of the 0xCxxx class,
"Unable to process" (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4), which C-STORE
calls "Cannot understand" (B.2.3); 0xC000 stays for requests that are not
DICOM at all.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar


class Status:
    """DIMSE status codes used by micropacs (PS3.4 Annex B.2.3, C.4; PS3.7 C)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    CANCEL = 0xFE00
    WARNING_SUBOPS = 0xB000
    """C-GET/C-MOVE: sub-operations complete, one or more failures or warnings."""
    COERCION_OF_DATA_ELEMENTS = 0xB000
    """C-STORE warning: the SCP changed some attributes (PS3.4 B.2.3)."""
    ELEMENTS_DISCARDED = 0xB006
    """C-STORE warning: the SCP discarded some attributes."""
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    """C-STORE warning: the data set does not match the SOP class, stored anyway."""
    STORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
    """Every C-STORE warning: the object was stored."""
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_SUBOPS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    DATASET_DOES_NOT_MATCH = 0xA900
    IDENTIFIER_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC001
    STUDY_MISMATCH = 0xC409
    """STOW-RS FailureReason: the instance belongs to another study than the request's URL
    (a failure of the 0xCxxx class, as dcm4chee answers it)."""


class MicropacsError(Exception):
    """Base of every error micropacs raises on purpose."""

    retryable: ClassVar[bool] = False
    dimse: ClassVar[int] = Status.CANNOT_UNDERSTAND
    http: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR


class InvalidInput(MicropacsError):
    """The request itself is wrong; sending it again will not help."""

    dimse = Status.CANNOT_UNDERSTAND
    http = HTTPStatus.BAD_REQUEST


class NotDicom(InvalidInput):
    """The bytes are not a DICOM dataset, or the dataset is truncated."""

    dimse = Status.CANNOT_UNDERSTAND


class InvalidUid(InvalidInput):
    """A UID is missing or malformed (PS3.5 9.1)."""

    dimse = Status.DATASET_DOES_NOT_MATCH


class InvalidIdentifier(InvalidInput):
    """A query identifier that cannot be matched (PS3.4 C.4.1.1.4)."""

    dimse = Status.IDENTIFIER_DOES_NOT_MATCH


class StudyMismatch(InvalidInput):
    """An instance POSTed to a study's URL belongs to another study (PS3.18 10.5.1).

    It names the refused instance, which the STOW-RS answer lists (10.5.3.2).
    """

    dimse = Status.STUDY_MISMATCH
    http = HTTPStatus.CONFLICT

    def __init__(self, message: str, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


class UnsupportedTransfer(InvalidInput):
    """No transfer syntax both the peer accepts and we can convert to."""

    dimse = Status.DATASET_DOES_NOT_MATCH
    http = HTTPStatus.NOT_ACCEPTABLE


class RequestTooLarge(InvalidInput):
    """A request over one of the configured limits (body size, number of parts)."""

    dimse = Status.OUT_OF_RESOURCES
    http = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class QueryTooBroad(RequestTooLarge):
    """A query that read and threw away more records than one query may
    (``MICROPACS_QUERY__MAX_EXAMINED``): its keys leave too many candidates.

    C-FIND answers Refused: Out of Resources (PS3.4 C.4.1.1.4), QIDO-RS 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the query read more than {limit} records it does not return"
            " (MICROPACS_QUERY__MAX_EXAMINED): add a key the catalog indexes, such as a"
            " study or series UID, a patient ID, a date range or a name prefix"
        )
        self.limit = limit


class RequestTimeout(InvalidInput):
    """A client that sent its request too slowly (idle or past the total time allowed)."""

    http = HTTPStatus.REQUEST_TIMEOUT


class InvalidSettings(InvalidInput):
    """A setting, or a file a setting names (the routing rules), is wrong: the process
    refuses to start and says what to fix."""


class NotFound(MicropacsError):
    """An instance, node or destination that is not known."""

    dimse = Status.UNABLE_TO_PROCESS
    http = HTTPStatus.NOT_FOUND


class UnknownDestination(NotFound):
    """A C-MOVE destination AE title that is not in the node registry."""

    dimse = Status.MOVE_DESTINATION_UNKNOWN


class Conflict(MicropacsError):
    """An object already stored under the same UID differs from the new one."""

    dimse = Status.DATASET_DOES_NOT_MATCH
    http = HTTPStatus.CONFLICT


class Unavailable(MicropacsError):
    """A backend is down, full or too slow; the same request may succeed later."""

    retryable = True
    dimse = Status.OUT_OF_RESOURCES
    http = HTTPStatus.SERVICE_UNAVAILABLE


class BlobStoreUnavailable(Unavailable):
    """The object store could not write or read an object."""


class EventBusUnavailable(Unavailable):
    """The event bus did not acknowledge a publish, or cannot be read."""


class CatalogUnavailable(Unavailable):
    """The catalog could not be read or written."""


def dimse_status(error: BaseException) -> int:
    """The DIMSE status that answers ``error``: its own, or 0xC001 for a bug."""
    if isinstance(error, MicropacsError):
        return error.dimse
    return Status.UNABLE_TO_PROCESS


def http_status(error: BaseException) -> int:
    """The HTTP status that answers ``error``: its own, or 500 for a bug."""
    if isinstance(error, MicropacsError):
        return int(error.http)
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)


def is_retryable(error: BaseException) -> bool:
    """Whether the operation that raised ``error`` may succeed if tried again."""
    return isinstance(error, MicropacsError) and error.retryable
