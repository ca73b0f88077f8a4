"""The Routing page: the router's queues and rules; a destination's entries, which operators
retry or cancel (:mod:`services.admin.routing`).

A cancel is confirmed first: without htmx the form's post answers a confirmation page whose
form carries ``confirmed``; with htmx the browser asks, and the button sends ``confirmed``
itself. After an action htmx swaps the entries in place; a plain form is redirected to the
destination's page with what was done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.auth.principal import Role
from micropacs.errors import InvalidInput
from services.admin import routing
from services.admin.web.access import require
from services.admin.web.forms import form_of
from services.admin.web.site import Site, guarded, see_other

PAGE_SIZE = 50
STATES = ("all", "waiting", "dead")


def _destination(request: Request) -> str:
    destination: str = request.path_params["ae"]
    if not 0 < len(destination) <= 64:
        raise InvalidInput("a destination is an AE title of 1 to 16 characters")
    return destination


def _offset(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def _notice(done: Mapping[str, Any]) -> str:
    """What an action did, from the counts it was redirected with (never text from the URL
    itself, so no link can make the page say something else)."""
    if "gone" in done:
        return "That entry is no longer queued: it was sent or canceled meanwhile."
    for name, text in (
        ("retried", "{} entries retried: the router sends them at its next look at the queue."),
        ("canceled", "{} entries canceled: they will not be sent."),
    ):
        count = str(done.get(name, ""))
        if count.isdigit():
            return text.format(int(count))
    return ""


class Routing:
    """The router's queues and rules."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/routing", self.show, methods=["GET"]),
            Route("/routing/{ae}", self.queue, methods=["GET"]),
            Route("/routing/{ae}/retry", self.retry, methods=["POST"]),
            Route("/routing/{ae}/cancel", self.cancel, methods=["POST"]),
        ]

    @guarded
    async def show(self, request: Request) -> Response:
        context = self.site.context
        rules = routing.rules(context.settings)
        queues = await routing.queues(
            context.catalog, context.registry, routing.destinations(rules)
        )
        return self.site.page(
            request,
            "routing.html",
            title="Routing",
            queues=queues,
            rules=rules,
            counted=any(queue.sent is not None for queue in queues),
        )

    async def _entries(
        self, request: Request, destination: str, state: str, offset: int, **values: Any
    ) -> dict[str, Any]:
        """What the entries fragment shows: a page of entries and the queue's figures."""
        catalog = self.site.context.catalog
        found = await catalog.forward_entries(
            destination, routing.state_of(state), PAGE_SIZE + 1, offset
        )
        shown = [routing.entry_view(entry) for entry in found[:PAGE_SIZE]]

        def link(at: int) -> str:
            query = urlencode({"state": state, "offset": at})
            return f"/routing/{quote(destination, safe='')}?{query}"

        stats = next(
            (q for q in await catalog.forward_queues() if q.destination == destination), None
        )
        return {
            "destination": destination,
            "state": state,
            "states": STATES,
            "entries": shown,
            "waiting": stats.waiting if stats else 0,
            "dead": stats.dead if stats else 0,
            "page": {
                "first": offset + 1 if shown else 0,
                "last": offset + len(shown),
                "previous": link(max(0, offset - PAGE_SIZE)) if offset else "",
                "next": link(offset + PAGE_SIZE) if len(found) > PAGE_SIZE else "",
            },
            **values,
        }

    @guarded
    async def queue(self, request: Request) -> Response:
        destination = _destination(request)
        params = request.query_params
        state = params.get("state", "all")
        if state not in STATES:
            raise InvalidInput(f"state is waiting, dead or all, not {state!r}")
        values = await self._entries(
            request, destination, state, _offset(params.get("offset", "0")), notice=_notice(params)
        )
        return self.site.page(
            request, "routing_queue.html", title=f"Queue of {destination}", **values
        )

    async def _done(self, request: Request, destination: str, done: dict[str, int]) -> Response:
        if request.headers.get("hx-request") == "true":
            values = await self._entries(request, destination, "all", 0, notice=_notice(done))
            return self.site.page(request, "routing_entries.html", **values)
        return see_other(f"/routing/{quote(destination, safe='')}?" + urlencode(done))

    @guarded
    async def retry(self, request: Request) -> Response:
        require(request, Role.OPERATOR)
        destination = _destination(request)
        form = await form_of(request)
        ids = [form["entry"]] if form.get("entry") else []
        changed = await self.site.context.catalog.retry_forwards(destination, ids, time.time())
        await self.site.record(
            request,
            "api",
            routing.retried_detail(destination, ids, changed),
            destination=destination,
        )
        done = {"gone": 1} if ids and not changed else {"retried": changed}
        return await self._done(request, destination, done)

    @guarded
    async def cancel(self, request: Request) -> Response:
        require(request, Role.OPERATOR)
        destination = _destination(request)
        form = await form_of(request)
        entry = form.get("entry", "")
        state_text = form.get("state", "")
        if not entry and state_text not in ("waiting", "dead", "all"):
            raise InvalidInput("choose an entry to cancel, or which entries: waiting, dead or all")
        if form.get("confirmed") != "yes":
            return self.site.page(
                request,
                "routing_cancel.html",
                title=f"Cancel entries of {destination}?",
                destination=destination,
                entry=entry,
                state=state_text,
            )
        state = routing.state_of(state_text) if not entry else None
        ids = [entry] if entry else []
        removed = await self.site.context.catalog.cancel_forwards(destination, ids, state)
        await self.site.record(
            request,
            "api",
            routing.canceled_detail(destination, ids, state, removed),
            destination=destination,
        )
        done = {"gone": 1} if entry and not removed else {"canceled": removed}
        return await self._done(request, destination, done)
