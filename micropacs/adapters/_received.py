"""Comparing receive times (private): which records a deletion requested at a time covers."""

from __future__ import annotations

from datetime import UTC, datetime


def received_by(received_at: str, until: str) -> bool:
    """Whether an instance received at ``received_at`` is no newer than ``until``
    (ISO 8601; "" is no bound, an unreadable time counts as old)."""
    if not until:
        return True
    try:
        received, bound = _instant(received_at), _instant(until)
    except ValueError:
        return True
    return received <= bound


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
