"""``/api/users`` and ``/api/tokens``: local users and API tokens (administrators only).

Passwords and token secrets are never shown: a new token's text is in the answer that
creates it, once (:mod:`micropacs.auth.local`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from micropacs.auth.local import TOKEN, USER
from micropacs.auth.principal import Principal, Role
from micropacs.ports import Credential
from services.admin.access import ADMINISTRATOR, audit, context_of

Name = Annotated[str, Field(min_length=1, max_length=64)]


class CredentialView(BaseModel):
    """A user or token without its secret."""

    name: str
    role: str
    description: str
    expires_at: str
    created_at: str

    @classmethod
    def of(cls, credential: Credential) -> CredentialView:
        """The view of ``credential``."""
        return cls(
            name=credential.name,
            role=credential.role,
            description=credential.description,
            expires_at=credential.expires_at,
            created_at=credential.created_at,
        )


class UserBody(BaseModel):
    """A new user (or a new password for one)."""

    name: Name
    password: str = Field(min_length=1, max_length=1024)
    role: Role
    description: str = Field("", max_length=256)


class RoleBody(BaseModel):
    """A new role."""

    role: Role


class TokenBody(BaseModel):
    """A new API token."""

    role: Role
    description: str = Field("", max_length=256)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class NewToken(CredentialView):
    """A token just created: its text, shown this once."""

    token: str


def router() -> APIRouter:
    """The user and token routes."""
    routes = APIRouter(tags=["users"])

    async def existing(request: Request, kind: str, name: str) -> Credential:
        found = await context_of(request).catalog.credential(kind, name)
        if found is None:
            raise HTTPException(404, f"no such {kind}")
        return found

    @routes.get("/users", response_model=list[CredentialView])
    async def list_users(
        request: Request, _: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> list[CredentialView]:
        """Every local user."""
        return [CredentialView.of(c) for c in await context_of(request).catalog.credentials(USER)]

    @routes.post("/users", status_code=201, response_model=CredentialView)
    async def create_user(
        request: Request, body: UserBody, who: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> CredentialView:
        """Add a user; 409 when the name is taken."""
        context = context_of(request)
        if await context.catalog.credential(USER, body.name) is not None:
            raise HTTPException(409, "a user of that name exists")
        await context.credentials.set_user(body.name, body.password, body.role, body.description)
        await audit(request, who, "user-changed", f"user added with role {body.role}")
        return CredentialView.of(await existing(request, USER, body.name))

    @routes.put("/users/{name}/role", response_model=CredentialView)
    async def change_role(
        request: Request,
        name: str,
        body: RoleBody,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
    ) -> CredentialView:
        """Give a user another role."""
        changed = replace(await existing(request, USER, name), role=body.role.value)
        await context_of(request).catalog.put_credential(changed)
        await audit(request, who, "user-changed", f"user's role set to {body.role}")
        return CredentialView.of(changed)

    @routes.delete("/users/{name}", status_code=204)
    async def delete_user(
        request: Request, name: str, who: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> Response:
        """Remove a user."""
        if not await context_of(request).catalog.remove_credential(USER, name):
            raise HTTPException(404, "no such user")
        await audit(request, who, "user-changed", "user removed")
        return Response(status_code=204)

    @routes.get("/tokens", response_model=list[CredentialView])
    async def list_tokens(
        request: Request, _: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> list[CredentialView]:
        """Every API token (its id, never its secret)."""
        return [CredentialView.of(c) for c in await context_of(request).catalog.credentials(TOKEN)]

    @routes.post("/tokens", status_code=201, response_model=NewToken)
    async def create_token(
        request: Request, body: TokenBody, who: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> NewToken:
        """A new token; its text is in this answer only."""
        expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
        text, credential = await context_of(request).credentials.create_token(
            body.role, body.description, expires
        )
        await audit(request, who, "user-changed", f"token {credential.name} created")
        return NewToken(token=text, **CredentialView.of(credential).model_dump())

    @routes.put("/tokens/{name}/role", response_model=CredentialView)
    async def change_token_role(
        request: Request,
        name: str,
        body: RoleBody,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
    ) -> CredentialView:
        """Give a token another role."""
        changed = replace(await existing(request, TOKEN, name), role=body.role.value)
        await context_of(request).catalog.put_credential(changed)
        await audit(request, who, "user-changed", f"token {name} role set to {body.role}")
        return CredentialView.of(changed)

    @routes.delete("/tokens/{name}", status_code=204)
    async def delete_token(
        request: Request, name: str, who: Annotated[Principal, Depends(ADMINISTRATOR)]
    ) -> Response:
        """Revoke a token."""
        if not await context_of(request).catalog.remove_credential(TOKEN, name):
            raise HTTPException(404, "no such token")
        await audit(request, who, "user-changed", f"token {name} removed")
        return Response(status_code=204)

    return routes
