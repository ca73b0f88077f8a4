"""The Status, Audit and Users and tokens pages."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.auth.local import TOKEN, USER
from micropacs.auth.principal import Role
from micropacs.errors import InvalidInput, NotFound
from micropacs.events import AUDIT_KINDS, Outcome
from micropacs.ports import AuditQuery
from services.admin.web.access import require
from services.admin.web.forms import form_of
from services.admin.web.site import Site, guarded, see_other
from services.admin.web.views import PAGE_SIZE, dicom_date

OUTCOMES = [("", "any"), *((str(int(o)), f"{int(o)} {o.name.lower()}") for o in Outcome)]


def byte_size(count: int) -> str:
    """``count`` bytes for people: 1.5 GiB, 320 MiB, 12 KiB, 800 B."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _day(text: str, what: str) -> str:
    """An ISO 8601 UTC instant at the start of a form's date ("" for none)."""
    date = dicom_date(text, what)
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00+00:00" if date else ""


def _next_day(text: str) -> str:
    if not text:
        return ""
    return (datetime.fromisoformat(text) + timedelta(days=1)).isoformat()


class Manage:
    """Status, audit trail, users and tokens."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/status", self.status, methods=["GET"]),
            Route("/audit", self.audit, methods=["GET"]),
            Route("/users", self.users, methods=["GET"]),
            Route("/users", self.add_user, methods=["POST"]),
            Route("/users/{name}/role", self.change_role, methods=["POST"]),
            Route("/users/{name}/delete", self.remove_user, methods=["POST"]),
            Route("/tokens", self.add_token, methods=["POST"]),
            Route("/tokens/{name}/delete", self.remove_token, methods=["POST"]),
        ]

    @guarded
    async def status(self, request: Request) -> Response:
        context = self.site.context
        status = await context.status.read(context)
        checks = [
            (
                name.replace("_", " "),
                f"failing: {status.failed[name]}" if name in status.failed else "ok",
            )
            for name in status.checked
        ]
        counts = status.counts
        figures = [
            ("patients", f"{counts.patients:,}" if counts else "unknown"),
            ("studies", f"{counts.studies:,}" if counts else "unknown"),
            ("series", f"{counts.series:,}" if counts else "unknown"),
            ("instances", f"{counts.instances:,}" if counts else "unknown"),
            ("send jobs kept", str(len(context.jobs.all()))),
        ]
        if status.disk:
            free, size = status.disk["free_bytes"], status.disk["size_bytes"]
            figures.append(("data directory free", f"{byte_size(free)} of {byte_size(size)}"))
        if status.index_behind is not None:
            behind = sum(status.index_behind.values())
            figures.append(("index behind (events)", f"{behind:,}"))
        for name, rate in status.rates.items():
            shown = "—" if rate is None else f"{rate:,.1f}/s"
            figures.append((name.replace("_", " "), shown))
        storage = [
            (group.storage_group, f"{group.instances:,}", byte_size(group.bytes))
            for group in status.storage or []
        ]
        return self.site.page(
            request,
            "status.html",
            title="Status",
            health={
                "ready": status.ready,
                "checks": checks,
                "figures": figures,
                "storage": storage,
                "storage_error": status.storage_error,
                "storage_max_age": int(context.status.storage_max_age),
                "services": status.services or [],
            },
        )

    @guarded
    async def audit(self, request: Request) -> Response:
        params = request.query_params
        filters = {
            name: str(params.get(name, "")).strip()[:64]
            for name in ("since", "until", "kind", "actor", "study_uid", "outcome")
        }
        if filters["kind"] and filters["kind"] not in AUDIT_KINDS:
            raise InvalidInput(f"no audit kind {filters['kind']!r}; pick one from the list")
        outcome = None
        if filters["outcome"]:
            if filters["outcome"] not in {str(int(o)) for o in Outcome}:
                raise InvalidInput("the outcome is 0, 4, 8 or 12")
            outcome = int(filters["outcome"])
        try:
            offset = max(0, int(params.get("offset", "0")))
        except ValueError:
            offset = 0
        query = AuditQuery(
            since=_day(filters["since"], "The first day"),
            until=_next_day(_day(filters["until"], "The last day")),
            kind=filters["kind"],
            actor=filters["actor"],
            study_uid=filters["study_uid"],
            outcome=outcome,
            limit=PAGE_SIZE + 1,
            offset=offset,
        )
        found = await self.site.context.catalog.audit(query)
        records = [
            {
                "time": record.time.replace("T", " ")[:19],
                "kind": record.kind,
                "outcome": record.outcome,
                "actor": record.actor,
                "source": record.source,
                "destination": record.destination,
                "studies": record.study_uids,
                "detail": record.detail,
            }
            for record in found[:PAGE_SIZE]
        ]
        shown = {k: v for k, v in filters.items() if v}
        page = {
            "first": offset + 1 if records else 0,
            "last": offset + len(records),
            "previous": _query(shown, max(0, offset - PAGE_SIZE)) if offset else "",
            "next": _query(shown, offset + PAGE_SIZE) if len(found) > PAGE_SIZE else "",
        }
        return self.site.page(
            request,
            "audit.html",
            title="Audit",
            filters=filters,
            kinds=[("", "any"), *((kind, kind) for kind in sorted(AUDIT_KINDS))],
            outcomes=OUTCOMES,
            records=records,
            page=page,
        )

    async def _users_page(self, request: Request, status: int = 200, **values: Any) -> Response:
        catalog = self.site.context.catalog
        return self.site.page(
            request,
            "users.html",
            status=status,
            title="Users and tokens",
            users=await catalog.credentials(USER),
            tokens=await catalog.credentials(TOKEN),
            roles=[role.value for role in Role],
            role_options=[(role.value, role.value) for role in Role],
            **values,
        )

    @guarded
    async def users(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        done = request.query_params.get("done", "")
        return await self._users_page(request, notice=done[:80])

    def _role(self, form: dict[str, str]) -> Role:
        try:
            return Role(form.get("role", ""))
        except ValueError:
            raise InvalidInput("the role is viewer, operator or administrator") from None

    @guarded
    async def add_user(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        form = await form_of(request)
        name = form.get("name", "")
        try:
            role = self._role(form)
            if await self.site.context.catalog.credential(USER, name) is not None:
                return await self._users_page(
                    request, 409, error=f"Not added: {name} is already a user; change its role."
                )
            await self.site.context.credentials.set_user(name, form.get("password", ""), role)
        except InvalidInput as exc:
            return await self._users_page(request, 422, error=f"Not added: {exc}.")
        await self.site.record(request, "user-changed", f"user {name} added as {role}")
        return see_other(f"/users?done=User {name} added.")

    @guarded
    async def change_role(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        name = request.path_params["name"]
        role = self._role(await form_of(request))
        catalog = self.site.context.catalog
        credential = await catalog.credential(USER, name)
        if credential is None:
            raise NotFound(f"no user {name!r}")
        await catalog.put_credential(dataclasses.replace(credential, role=role.value))
        await self.site.record(request, "user-changed", f"user {name} now {role}")
        return see_other(f"/users?done=User {name} is now {role}.")

    @guarded
    async def remove_user(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        name = request.path_params["name"]
        if not await self.site.context.catalog.remove_credential(USER, name):
            raise NotFound(f"no user {name!r}")
        await self.site.record(request, "user-changed", f"user {name} removed")
        return see_other(f"/users?done=User {name} removed.")

    @guarded
    async def add_token(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        form = await form_of(request)
        role = self._role(form)
        description = form.get("name", "")[:100]
        if not description:
            return await self._users_page(
                request, 422, error="Not created: give the token a name (who or what uses it)."
            )
        secret, credential = await self.site.context.credentials.create_token(role, description)
        await self.site.record(request, "user-changed", f"token {credential.name} created")
        new_token = {"name": description, "secret": secret}
        return await self._users_page(request, 201, new_token=new_token)

    @guarded
    async def remove_token(self, request: Request) -> Response:
        require(request, Role.ADMINISTRATOR)
        name = request.path_params["name"]
        if not await self.site.context.catalog.remove_credential(TOKEN, name):
            raise NotFound(f"no token {name!r}")
        await self.site.record(request, "user-changed", f"token {name} revoked")
        return see_other(f"/users?done=Token {name} revoked.")


def _query(filters: dict[str, str], offset: int) -> str:
    return "?" + urlencode({**filters, "offset": offset})
