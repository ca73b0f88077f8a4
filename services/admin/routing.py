"""The router's queues and rules as operators see them: what ``/api/routing`` answers and
the Routing page shows.

The queues are the catalog's (:class:`~micropacs.ports.ForwardQueue`), which every router
process shares, so the admin lists, retries and cancels entries there without asking a
router (no service calls another). A retry makes entries due now: an idle router sends
them at its next look at the queue (``MICROPACS_ROUTER__IDLE_INTERVAL``); one whose
destination is failing first ends the backoff it is in (at most
``MICROPACS_ROUTER__BACKOFF_MAX``), since only the router process itself can cut that wait.

The sent, failed and dead-lettered counts are the router's own counters
(``micropacs_router_sent_total`` and its siblings) in this process's metrics registry:
known when the router runs in the same process (``micropacs serve``), None otherwise;
then the dashboard shows them from Prometheus.

The rules are read from ``MICROPACS_ROUTER__RULES_FILE`` at each look, with the router's
own parser (:mod:`micropacs.routing.rules`). They are edited in that file, not here: the
file is what every router process reads at start, what a site keeps under version control
and reviews, and a change takes effect when the routers restart; the list is the file as
it is now, and says so when the file no longer reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from pydicom.datadict import keyword_for_tag

from micropacs.config import Settings
from micropacs.errors import InvalidSettings
from micropacs.ports import Catalog, ForwardEntry, ForwardState
from micropacs.routing.rules import SYNTAX_NAMES, Coercion, parse_rules

MAX_PAGE = 500
"""Entries one page lists at most."""
MAX_IDS = 10_000
"""Entries one retry or cancel names at most."""
COUNTERS = {
    "sent": "micropacs_router_sent_total",
    "failed": "micropacs_router_failed_total",
    "dead_lettered": "micropacs_router_dead_lettered_total",
}
"""The router's counters a queue's row shows, by the row's field."""
SYNTAX_LABELS = {uid: name for name, uid in SYNTAX_NAMES.items()}


@dataclass(frozen=True)
class QueueView:
    """One destination's queue: its depth, its oldest waiting entry, and the router's counts
    since this process started (None when the router does not run in it)."""

    destination: str
    waiting: int
    dead: int
    oldest_waiting_at: str | None
    oldest_waiting_seconds: float
    sent: int | None
    failed: int | None
    dead_lettered: int | None


@dataclass(frozen=True)
class RuleView:
    """One rule as the file has it, readable."""

    name: str
    match: list[tuple[str, str]]
    forward: list[tuple[str, str]]
    """(destination, transfer syntax) pairs."""
    coerce: list[str]


@dataclass(frozen=True)
class RulesView:
    """The rules file's path and rules, or why it cannot be read."""

    file: str | None
    rules: list[RuleView] = field(default_factory=list)
    error: str = ""


def iso(seconds: float | None) -> str | None:
    """A time of the queue (seconds since the epoch) as ISO 8601 in UTC."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _counts(registry: CollectorRegistry) -> dict[str, dict[str, int]] | None:
    """Each counter's value per destination; None when the router's are not registered."""
    found: dict[str, dict[str, int]] = {name: {} for name in COUNTERS}
    registered = False
    by_sample = {sample: name for name, sample in COUNTERS.items()}
    for metric in registry.collect():
        # A labelled counter with no destination yet has no sample, but is registered.
        registered = registered or f"{metric.name}_total" in by_sample
        for sample in metric.samples:
            name = by_sample.get(sample.name)
            if name is None:
                continue
            destination = sample.labels.get("destination", "")
            found[name][destination] = int(sample.value)
    return found if registered else None


async def queues(
    catalog: Catalog, registry: CollectorRegistry, destinations: frozenset[str] = frozenset()
) -> list[QueueView]:
    """Every destination that has entries, has been sent to, or a rule names, by AE title."""
    stats = {queue.destination: queue for queue in await catalog.forward_queues()}
    counts = _counts(registry)
    names = set(stats) | set(destinations)
    if counts is not None:
        names.update(*(per.keys() for per in counts.values()))
    now = time.time()
    views = []
    for name in sorted(names):
        queue = stats.get(name)
        oldest = queue.oldest_waiting if queue else None
        views.append(
            QueueView(
                destination=name,
                waiting=queue.waiting if queue else 0,
                dead=queue.dead if queue else 0,
                oldest_waiting_at=iso(oldest),
                oldest_waiting_seconds=round(max(now - oldest, 0.0), 1) if oldest else 0.0,
                sent=counts["sent"].get(name, 0) if counts is not None else None,
                failed=counts["failed"].get(name, 0) if counts is not None else None,
                dead_lettered=counts["dead_lettered"].get(name, 0) if counts is not None else None,
            )
        )
    return views


def state_of(text: str) -> ForwardState | None:
    """The state a filter names (``waiting``, ``dead``; ``all`` or "" for both)."""
    if text in ("", "all"):
        return None
    try:
        return ForwardState(text)
    except ValueError:
        raise ValueError(f"state is waiting, dead or all, not {text!r}") from None


def entry_view(entry: ForwardEntry) -> dict[str, object]:
    """One queue entry as the API answers it and the page shows it."""
    waiting = entry.state is ForwardState.WAITING
    return {
        "id": entry.entry_id,
        "state": entry.state.value,
        "rule": entry.rule,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "next_attempt_at": iso(entry.due_at) if waiting else None,
        "enqueued_at": iso(entry.enqueued_at),
        "sop_class_uid": entry.sop_class_uid,
        "sop_instance_uid": entry.sop_instance_uid,
        "series_instance_uid": entry.series_instance_uid,
        "study_instance_uid": entry.study_instance_uid,
        "transfer_syntax": SYNTAX_LABELS.get(entry.target_syntax, entry.target_syntax)
        or "as stored",
        "size": entry.size,
    }


def _tag_name(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or tag


def _coercion_text(coercion: Coercion) -> str:
    target = _tag_name(coercion.tag)
    if coercion.action == "set":
        return f"set {target} to {coercion.value!r}"
    if coercion.action == "copy":
        return f"copy {_tag_name(coercion.source)} into {target}"
    return f"remove {target}"


def _written(match: object) -> list[tuple[str, str]]:
    """A rule's ``match`` as the file writes it (key, values joined by ", "): the compiled
    matcher is not readable, and the file's own words are what an operator edits."""
    if not isinstance(match, dict):
        return []
    shown: list[tuple[str, str]] = []
    for key, given in match.items():
        if key == "attributes" and isinstance(given, dict):
            shown.extend(_written(given))
            continue
        values = given if isinstance(given, list) else [given]
        shown.append((str(key), ", ".join(str(value) for value in values)))
    return shown


def rules(settings: Settings) -> RulesView:
    """The rules of the configured file as it is now, or why it does not read."""
    path: Path | None = settings.router.rules_file
    if path is None:
        return RulesView(file=None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return RulesView(file=str(path), error=f"cannot read the file: {exc}")
    try:
        found = parse_rules(text, str(path))
    except InvalidSettings as exc:
        return RulesView(file=str(path), error=str(exc))
    # parse_rules accepted it: a mapping whose "rules" are in the order of found.rules.
    raw = (yaml.safe_load(text) or {}).get("rules") or []
    return RulesView(
        file=str(path),
        rules=[
            RuleView(
                name=rule.name,
                match=_written(written.get("match")),
                forward=[
                    (f.destination, SYNTAX_LABELS.get(f.transfer_syntax, f.transfer_syntax))
                    if f.transfer_syntax
                    else (f.destination, "as stored")
                    for f in rule.forwards
                ],
                coerce=[_coercion_text(c) for c in rule.coercions],
            )
            for rule, written in zip(found.rules, raw, strict=True)
        ],
    )


def destinations(view: RulesView) -> frozenset[str]:
    """Every destination the rules forward to."""
    return frozenset(dest for rule in view.rules for dest, _ in rule.forward)


def retried_detail(destination: str, ids: list[str], count: int) -> str:
    """The audit record's text of a retry (entry ids name the destination and an object
    key, never a patient)."""
    which = f"{len(ids)} named entries" if ids else "every dead entry"
    return f"routing queue {destination}: {which} retried ({count} changed)"


def canceled_detail(
    destination: str, ids: list[str], state: ForwardState | None, count: int
) -> str:
    """The audit record's text of a cancel."""
    if ids:
        which = f"{len(ids)} named entries"
    else:
        which = f"every {state.value} entry" if state else "every entry"
    return f"routing queue {destination}: {which} canceled ({count} removed)"
