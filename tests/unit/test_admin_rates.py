"""The status's rates: counters summed from this process's registry and the services'
/metrics, and per-second rates between two looks that are never inflated or negative."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, generate_latest

from services.admin.status import Rates, exposition_samples, registry_samples, totals_of


def test_totals_sum_a_counter_over_its_labels_from_a_registry_and_an_exposition() -> None:
    registry = CollectorRegistry()
    stored = Counter("micropacs_ingest_instances", "stored", ["outcome"], registry=registry)
    stored.labels("stored").inc(3)
    stored.labels("refused").inc(2)
    Counter("micropacs_unrelated", "other", registry=registry).inc(99)
    expected = {"ingest_instances": 5.0, "queries": 0.0, "index_upserts": 0.0}
    assert totals_of(registry_samples(registry)) == expected
    text = generate_latest(registry).decode()
    assert totals_of(exposition_samples(text)) == expected


def test_a_rate_needs_two_looks_at_the_same_services() -> None:
    rates = Rates()
    zero = dict.fromkeys(("ingest_instances", "queries", "index_upserts"), 0.0)
    assert rates.look(zero, frozenset({"ingest"})) == dict.fromkeys(zero)
    time.sleep(0.05)
    later = {**zero, "ingest_instances": 10.0}
    shown = rates.look(later, frozenset({"ingest"}))
    ingest = shown["ingest_instances"]
    assert ingest is not None and 0 < ingest <= 10 / 0.05
    assert shown["queries"] == 0.0
    # One more service answering adds its whole total: no rate for that look.
    more = {**later, "queries": 500.0}
    assert rates.look(more, frozenset({"ingest", "qr"})) == dict.fromkeys(zero)
    time.sleep(0.01)
    # A restarted service's counters start again from zero: no negative rate.
    restarted = {**more, "ingest_instances": 1.0}
    shown = rates.look(restarted, frozenset({"ingest", "qr"}))
    assert shown["ingest_instances"] is None
    assert shown["queries"] == 0.0
