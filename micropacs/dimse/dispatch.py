"""One pynetdicom handler per DIMSE operation, chosen per request among the services.

pynetdicom binds one handler to an intervention event (``EVT_C_FIND``, ``EVT_N_SET``
…): a second binding replaces the first. Two services may answer one operation for
different SOP classes (C-FIND of Query/Retrieve, PS3.4 C.4.1, and of Modality
Worklist, PS3.4 K.4.1), so the bindings of every service go through :func:`combine`,
which binds one dispatcher per such event: it calls the handler of the service that
:class:`~micropacs.service.OperationOwners` names for the request's SOP class
(PS3.7 9.1, 10.1: Affected or Requested SOP Class UID). Notification events keep
every binding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pynetdicom import evt

from micropacs.service import HandlerBinding, OperationOwners

log = logging.getLogger(__name__)

_UNABLE_TO_PROCESS = 0xC001


def operation_of(event: Any) -> str:
    """The DIMSE operation an intervention event answers: ``EVT_C_FIND`` → ``C-FIND``."""
    return str(event.name).removeprefix("EVT_").replace("_", "-")


def sop_class_of(event: evt.Event) -> str:
    """The SOP class a request names (C-* and N-CREATE: Affected, other N-*: Requested)."""
    request = event.request
    for name in ("AffectedSOPClassUID", "RequestedSOPClassUID"):
        uid = getattr(request, name, None)
        if uid:
            return str(uid)
    return str(event.context.abstract_syntax)


class Dispatcher:
    """The one handler of an operation several services answer."""

    def __init__(
        self, operation: str, owners: OperationOwners, bound: Mapping[str, HandlerBinding]
    ) -> None:
        self._operation = operation
        self._owners = owners
        self._bound = bound

    def __call__(self, event: evt.Event) -> Any:
        owner = self._owners.owner(self._operation, sop_class_of(event))
        binding = self._bound.get(owner or "")
        if binding is None:
            # Unreachable while the services accept only contexts they answer.
            log.error("no service answers this request", extra={"operation": self._operation})
            return _refusal(event)
        handler, *rest = binding[1:]
        args = rest[0] if rest else []
        return handler(event, *args)


def _refusal(event: evt.Event) -> Any:
    if event.event is evt.EVT_C_FIND:
        return iter([(_UNABLE_TO_PROCESS, None)])
    return (_UNABLE_TO_PROCESS, None)


def combine(
    owners: OperationOwners, bindings: Sequence[tuple[str, Sequence[HandlerBinding]]]
) -> list[HandlerBinding]:
    """The bindings of every service (``(service name, its bindings)``), with one handler
    per intervention event: a service's own where it alone binds the event, else a
    :class:`Dispatcher` among those that do."""
    combined: list[HandlerBinding] = []
    shared: dict[Any, dict[str, HandlerBinding]] = {}
    for name, own in bindings:
        for binding in own:
            event = binding[0]
            if isinstance(event, evt.InterventionEvent):
                shared.setdefault(event, {})[name] = binding
            else:
                combined.append(binding)
    for event, bound in shared.items():
        if len(bound) == 1:
            combined.extend(bound.values())
        else:
            combined.append((event, Dispatcher(operation_of(event), owners, bound)))
    return combined
