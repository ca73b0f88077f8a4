"""DICOMweb of the qr service: QIDO-RS, WADO-RS and WADO-URI (PS3.18 10.6, 10.4, 9).

Every route goes through the same QueryService and RetrieveService as C-FIND,
C-GET and C-MOVE, so both paths give one answer because it is one function.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from services.qr.qido_rs import QidoRs
from services.qr.query_service import QueryService
from services.qr.retrieve_service import RetrieveService
from services.qr.wado_rs import WadoRs
from services.qr.wado_uri import WadoUri


def routes(query: QueryService, retrieve: RetrieveService) -> list[BaseRoute]:
    """Every DICOMweb route of the qr service."""
    return [
        *QidoRs(query).routes(),
        *WadoRs(query, retrieve).routes(),
        *WadoUri(retrieve).routes(),
    ]
