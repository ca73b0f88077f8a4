"""``/api/nodes``: the known DICOM nodes (administrators manage them; operators verify).

A node's AE title is checked as PS3.5 6.2 defines the AE value representation: 1 to 16
characters of the default repertoire, no backslash and no control character, not only
spaces (leading and trailing spaces are not significant and are trimmed).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micropacs.auth.principal import Principal
from micropacs.ports import Node
from services.admin.access import ADMINISTRATOR, OPERATOR, VIEWER, audit, context_of

AE_TITLE_CHARACTERS = frozenset(chr(code) for code in range(0x20, 0x7F)) - {"\\"}


def checked_ae_title(value: str) -> str:
    """``value`` as an AE title (PS3.5 6.2, AE), trimmed; ValueError says what is wrong."""
    title = value.strip(" ")
    if not 0 < len(title) <= 16:
        raise ValueError("an AE title has 1 to 16 characters besides leading and trailing spaces")
    if not set(title) <= AE_TITLE_CHARACTERS:
        raise ValueError("an AE title has printable ASCII characters only, and no backslash")
    return title


AeTitle = Annotated[str, Path(min_length=1, max_length=64, description="The node's AE title")]


class NodeFields(BaseModel):
    """Everything a node has but its AE title (:class:`micropacs.ports.Node`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, description="Host name or address.")
    port: int = Field(ge=1, le=65535, description="Its DICOM port.")
    description: str = Field("", max_length=256)
    tls: bool = Field(False, description="Associations with it use TLS.")
    issuer_of_patient_id: str = Field("", max_length=64)
    issuer_of_accession_number: str = Field("", max_length=64)
    user_id: str = Field("", max_length=256, description="User Identity it must present.")
    storage_group: str = Field("", max_length=64)
    ae_group: str = Field("", max_length=64)
    store: bool = True
    query: bool = True
    retrieve: bool = True
    move_destination: bool = True
    allowed_from: list[str] = Field(default_factory=list, max_length=64)
    from_host: bool = True
    tls_certificates: list[str] = Field(default_factory=list, max_length=4)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if any(c.isspace() or c in "/\\@" for c in value):
            raise ValueError("a host is a name or an address, without spaces or / \\ @")
        return value

    @model_validator(mode="after")
    def _origins(self) -> NodeFields:
        if not self.from_host and not self.allowed_from:
            raise ValueError("from_host false needs at least one allowed_from network")
        return self

    def node(self, ae_title: str) -> Node:
        """The node of this title; ValueError names a bad network or fingerprint."""
        node = Node(
            ae_title=ae_title,
            **self.model_dump(exclude={"ae_title", "allowed_from", "tls_certificates"}),
            allowed_from=tuple(self.allowed_from),
            tls_certificates=tuple(self.tls_certificates),
        )
        node.networks()
        return Node(**{**asdict(node), "tls_certificates": node.fingerprints()})


class NodeBody(NodeFields):
    """A new node."""

    ae_title: str = Field(description="AE title, 1 to 16 characters (PS3.5 6.2).")

    @field_validator("ae_title")
    @classmethod
    def _title(cls, value: str) -> str:
        return checked_ae_title(value)


class NodeView(NodeBody):
    """A node as the API shows it."""

    @classmethod
    def of(cls, node: Node) -> NodeView:
        """The view of ``node``."""
        return cls.model_validate(
            {
                **asdict(node),
                "allowed_from": list(node.allowed_from),
                "tls_certificates": list(node.tls_certificates),
            }
        )


class EchoView(BaseModel):
    """How a C-ECHO of a node ended."""

    ae_title: str
    reachable: bool
    status: int | None = Field(description="The C-ECHO status (0 is Success), null without one.")
    round_trip_ms: float
    reason: str = ""


async def _nodes(request: Request) -> dict[str, Node]:
    return {node.ae_title: node for node in await context_of(request).catalog.nodes()}


async def _node(request: Request, ae_title: str) -> Node:
    node = (await _nodes(request)).get(ae_title.strip(" "))
    if node is None:
        raise HTTPException(404, f"no node {ae_title!r}")
    return node


def _checked(fields: NodeFields, ae_title: str) -> Node:
    try:
        return fields.node(ae_title)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def router() -> APIRouter:
    """The node routes."""
    nodes = APIRouter(prefix="/nodes", tags=["nodes"])

    @nodes.get("", response_model=list[NodeView])
    async def list_nodes(
        request: Request, _: Annotated[Principal, Depends(VIEWER)]
    ) -> list[NodeView]:
        """Every known node, by AE title."""
        return [NodeView.of(node) for _, node in sorted((await _nodes(request)).items())]

    @nodes.get("/{ae_title}", response_model=NodeView)
    async def show_node(
        request: Request, ae_title: AeTitle, _: Annotated[Principal, Depends(VIEWER)]
    ) -> NodeView:
        """One node."""
        return NodeView.of(await _node(request, ae_title))

    @nodes.post("", status_code=201, response_model=NodeView)
    async def create_node(
        request: Request,
        body: NodeBody,
        response: Response,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
    ) -> NodeView:
        """Add a node; 409 when its AE title is known already."""
        node = _checked(body, body.ae_title)
        if node.ae_title in await _nodes(request):
            raise HTTPException(409, f"a node {node.ae_title!r} exists; edit it with PUT")
        await context_of(request).catalog.put_node(node)
        await audit(request, who, "node-changed", f"node {node.ae_title} added")
        response.headers["Location"] = f"{request.scope.get('root_path', '')}/nodes/{node.ae_title}"
        return NodeView.of(node)

    @nodes.put("/{ae_title}", response_model=NodeView)
    async def edit_node(
        request: Request,
        ae_title: AeTitle,
        body: NodeFields,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
    ) -> NodeView:
        """Replace every field of a known node but its AE title."""
        known = await _node(request, ae_title)
        node = _checked(body, known.ae_title)
        await context_of(request).catalog.put_node(node)
        await audit(request, who, "node-changed", f"node {node.ae_title} changed")
        return NodeView.of(node)

    @nodes.delete("/{ae_title}", status_code=204)
    async def delete_node(
        request: Request, ae_title: AeTitle, who: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> Response:
        """Remove a node."""
        node = await _node(request, ae_title)
        await context_of(request).catalog.remove_node(node.ae_title)
        await audit(request, who, "node-changed", f"node {node.ae_title} removed")
        return Response(status_code=204)

    @nodes.post("/{ae_title}/verify", response_model=EchoView)
    async def verify_node(
        request: Request, ae_title: AeTitle, who: Annotated[Principal, Depends(OPERATOR)]
    ) -> EchoView:
        """C-ECHO the node (PS3.4 A.4): whether it answered, its status, the round trip."""
        node = await _node(request, ae_title)
        result = await asyncio.to_thread(context_of(request).associations.echo, node)
        await audit(
            request,
            who,
            "api",
            f"C-ECHO of {node.ae_title}",
            failed=result.status != 0,
            destination=node.ae_title,
        )
        return EchoView(ae_title=node.ae_title, **asdict(result))

    return nodes
