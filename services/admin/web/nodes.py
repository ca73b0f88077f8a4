"""The Nodes page: the known DICOM nodes; add, edit, remove (administrators), verify
(operators) with the C-ECHO's round trip shown."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.auth.principal import Role
from micropacs.errors import InvalidInput, NotFound
from micropacs.ports import Node
from services.admin.nodes_api import NodeBody, NodeFields
from services.admin.web.access import may, require
from services.admin.web.forms import form_of
from services.admin.web.site import Site, guarded, see_other

TEXT_FIELDS = (
    "host",
    "description",
    "issuer_of_patient_id",
    "issuer_of_accession_number",
    "user_id",
    "storage_group",
    "ae_group",
)


def node_of(form: dict[str, str], existing: Node | None) -> Node:
    """The node the form describes, checked as the REST API checks it (an edit keeps the
    fields the form does not show); InvalidInput says what is wrong."""
    values: dict[str, Any] = asdict(existing) if existing else {}
    values.update({name: form.get(name, "") for name in TEXT_FIELDS})
    values.update(port=form.get("port", ""), tls=form.get("tls") == "on")
    try:
        if existing is not None:
            title = values.pop("ae_title")
            return NodeFields.model_validate(values).node(title)
        body = NodeBody.model_validate({**values, "ae_title": form.get("ae_title", "")})
        return NodeFields.model_validate(body.model_dump(exclude={"ae_title"})).node(body.ae_title)
    except ValidationError as exc:
        reasons = (
            f"{'.'.join(str(part) for part in error['loc']) or 'node'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInput("; ".join(reasons)) from None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


class Nodes:
    """The node registry's page."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/nodes", self.show, methods=["GET"]),
            Route("/nodes", self.add, methods=["POST"]),
            Route("/nodes/{ae}/edit", self.edit, methods=["GET"]),
            Route("/nodes/{ae}", self.save, methods=["POST"]),
            Route("/nodes/{ae}/delete", self.remove, methods=["POST"]),
            Route("/nodes/{ae}/verify", self.verify, methods=["POST"]),
        ]

    async def _node(self, ae_title: str) -> Node:
        for node in await self.site.context.catalog.nodes():
            if node.ae_title == ae_title:
                return node
        raise NotFound(f"no node {ae_title!r}; see the Nodes page")

    async def _page(self, request: Request, status: int = 200, **values: Any) -> Response:
        nodes = sorted(await self.site.context.catalog.nodes(), key=lambda n: n.ae_title)
        values.setdefault("form", {})
        return self.site.page(
            request,
            "nodes.html",
            status=status,
            title="Nodes",
            nodes=nodes,
            can_manage=may(request, Role.ADMINISTRATOR),
            can_verify=may(request, Role.OPERATOR),
            form_action="/nodes",
            editing=False,
            **values,
        )

    @guarded
    async def show(self, request: Request) -> Response:
        saved = request.query_params.get("saved", "")
        return await self._page(request, notice=f"Node {saved} saved." if saved else "")

    @guarded
    async def add(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        form = await form_of(request)
        try:
            node = node_of(form, None)
        except InvalidInput as exc:
            return await self._page(request, 422, form=form, error=f"Not added: {exc}.")
        if any(n.ae_title == node.ae_title for n in await self.site.context.catalog.nodes()):
            return await self._page(
                request,
                409,
                form=form,
                error=f"Not added: {node.ae_title} is already a node; edit it instead.",
            )
        await self.site.context.catalog.put_node(node)
        await self.site.record(request, "node-changed", f"node {node.ae_title} added")
        return see_other(f"/nodes?saved={node.ae_title}")

    @guarded
    async def edit(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        node = await self._node(request.path_params["ae"])
        return self.site.page(
            request,
            "node_edit.html",
            title=f"Edit node {node.ae_title}",
            form=node,
            form_action=f"/nodes/{node.ae_title}",
            editing=True,
        )

    @guarded
    async def save(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        existing = await self._node(request.path_params["ae"])
        form = await form_of(request)
        try:
            node = node_of(form, existing)
        except InvalidInput as exc:
            return self.site.page(
                request,
                "node_edit.html",
                status=422,
                title=f"Edit node {existing.ae_title}",
                form=existing,
                form_action=f"/nodes/{existing.ae_title}",
                editing=True,
                error=f"Not saved: {exc}.",
            )
        await self.site.context.catalog.put_node(node)
        await self.site.record(request, "node-changed", f"node {node.ae_title} changed")
        return see_other(f"/nodes?saved={node.ae_title}")

    @guarded
    async def remove(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        ae_title = request.path_params["ae"]
        if not await self.site.context.catalog.remove_node(ae_title):
            raise NotFound(f"no node {ae_title!r}; see the Nodes page")
        await self.site.record(request, "node-changed", f"node {ae_title} removed")
        return see_other("/nodes")

    @guarded
    async def verify(self, request: Request) -> Response:
        require(request, Role.OPERATOR)
        node = await self._node(request.path_params["ae"])
        echo = await asyncio.to_thread(self.site.context.associations.echo, node)
        verified = {
            "ae_title": node.ae_title,
            "ok": echo.reachable and echo.status == 0,
            "status": f"0x{echo.status:04X}" if echo.status is not None else "none",
            "round_trip_ms": echo.round_trip_ms,
            "reason": echo.reason or "no answer",
        }
        await self.site.record(
            request,
            "api",
            f"node {node.ae_title} verified: {verified['status']}",
            failed=not verified["ok"],
            destination=node.ae_title,
        )
        if request.headers.get("hx-request") == "true":
            return self.site.page(request, "verify_result.html", verified=verified)
        return await self._page(request, verified=verified)
