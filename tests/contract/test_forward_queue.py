"""Catalog contract, the router's forward queues: idempotent enqueue, leased claims of the
oldest due entries, failures, dead entries, the maximum age, counts, pages, retry and
cancel (micropacs.ports.ForwardQueue)."""

from __future__ import annotations

from micropacs.ports import Catalog, ForwardEntry, ForwardFailure, ForwardState
from tests.contract.conftest import Runner

T0 = 1_780_000_000.0
"""A time in 2026, seconds since the epoch."""
LEASE = 60.0


def _entry(n: int, destination: str = "WS1", **changes: object) -> ForwardEntry:
    fields: dict[str, object] = {
        "entry_id": f"{destination}-{n:04d}",
        "destination": destination,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": f"1.2.826.0.1.3680043.10.543.9.{n}",
        "series_instance_uid": "1.2.826.0.1.3680043.10.543.9.1000",
        "study_instance_uid": "1.2.826.0.1.3680043.10.543.9.2000",
        "object_key": f"studies/s/series/r/instances/{n}",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "size": 1000 + n,
        "target_syntax": "",
        "rule": "ct",
        "enqueued_at": T0 + n,
    }
    fields.update(changes)
    return ForwardEntry(**fields)  # type: ignore[arg-type]


def _ids(entries: list[ForwardEntry]) -> list[str]:
    return [e.entry_id for e in entries]


def test_entries_come_back_whole_and_enqueue_is_idempotent(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(1), _entry(2)]))
    run(catalog.enqueue_forwards([_entry(2, rule="changed"), _entry(3)]))
    run(catalog.enqueue_forwards([]))
    found = run(catalog.forward_entries("WS1", None, 10))
    assert _ids(found) == ["WS1-0001", "WS1-0002", "WS1-0003"]
    assert found[1] == _entry(2, due_at=T0 + 2)  # the first enqueue of it stays
    assert found[0].state is ForwardState.WAITING and found[0].attempts == 0


def test_claims_lease_the_oldest_due_entries_of_one_destination(
    catalog: Catalog, run: Runner
) -> None:
    run(catalog.enqueue_forwards([_entry(n) for n in (3, 1, 2, 4)] + [_entry(1, "ARCHIVE")]))
    now = T0 + 100
    assert _ids(run(catalog.claim_forwards("WS1", now, 2, LEASE))) == ["WS1-0001", "WS1-0002"]
    # Leased: another claim gets the next ones, then nothing.
    assert _ids(run(catalog.claim_forwards("WS1", now, 5, LEASE))) == ["WS1-0003", "WS1-0004"]
    assert run(catalog.claim_forwards("WS1", now + 1, 5, LEASE)) == []
    # A lease that ran out (its router died) is claimed again.
    again = run(catalog.claim_forwards("WS1", now + LEASE + 1, 1, LEASE))
    assert _ids(again) == ["WS1-0001"]
    assert _ids(run(catalog.claim_forwards("ARCHIVE", now, 5, LEASE))) == ["ARCHIVE-0001"]
    # Not due yet: an entry enqueued after "now" waits.
    assert run(catalog.claim_forwards("NOBODY", now, 5, LEASE)) == []


def test_an_entry_enqueued_later_is_not_due_before_its_time(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(50)]))
    assert run(catalog.claim_forwards("WS1", T0 + 10, 5, LEASE)) == []
    assert _ids(run(catalog.claim_forwards("WS1", T0 + 50, 5, LEASE))) == ["WS1-0050"]


def test_completed_entries_are_gone(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(1), _entry(2)]))
    claimed = run(catalog.claim_forwards("WS1", T0 + 10, 5, LEASE))
    run(catalog.complete_forwards(_ids(claimed[:1])))
    run(catalog.complete_forwards(["WS1-9999"]))
    assert _ids(run(catalog.forward_entries("WS1", None, 10))) == ["WS1-0002"]
    assert run(catalog.claim_forwards("WS1", T0 + LEASE + 20, 5, LEASE))[0].entry_id == "WS1-0002"


def test_a_failure_counts_an_attempt_and_delays_the_entry(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(1), _entry(2)]))
    now = T0 + 10
    run(catalog.claim_forwards("WS1", now, 5, LEASE))
    run(
        catalog.fail_forwards(
            [
                ForwardFailure("WS1-0001", "association rejected", due_at=now + 30),
                ForwardFailure("WS1-0002", "refused: 0xA900", due_at=now, dead=True),
            ]
        )
    )
    # The lease ended with the failure: due again at its time, not the lease's.
    assert run(catalog.claim_forwards("WS1", now + 29, 5, LEASE)) == []
    claimed = run(catalog.claim_forwards("WS1", now + 30, 5, LEASE))
    assert _ids(claimed) == ["WS1-0001"]
    assert claimed[0].attempts == 1 and claimed[0].last_error == "association rejected"
    assert claimed[0].due_at == now + 30
    dead = run(catalog.forward_entries("WS1", ForwardState.DEAD, 10))
    assert _ids(dead) == ["WS1-0002"] and dead[0].last_error == "refused: 0xA900"
    waiting = run(catalog.forward_entries("WS1", ForwardState.WAITING, 10))
    assert _ids(waiting) == ["WS1-0001"]


def test_entries_past_the_maximum_age_die(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(n) for n in range(1, 6)] + [_entry(1, "OTHER")]))
    assert run(catalog.expire_forwards("WS1", T0 + 3, "older than 7 days")) == 2
    assert run(catalog.expire_forwards("WS1", T0 + 3, "older than 7 days")) == 0
    dead = run(catalog.forward_entries("WS1", ForwardState.DEAD, 10))
    assert _ids(dead) == ["WS1-0001", "WS1-0002"]
    assert {e.last_error for e in dead} == {"older than 7 days"}
    assert _ids(run(catalog.claim_forwards("WS1", T0 + 10, 10, LEASE))) == [
        "WS1-0003",
        "WS1-0004",
        "WS1-0005",
    ]
    assert len(run(catalog.forward_entries("OTHER", ForwardState.WAITING, 10))) == 1


def test_queues_are_counted_per_destination(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.forward_queues()) == []
    run(catalog.enqueue_forwards([_entry(n) for n in (5, 2, 9)] + [_entry(7, "ARCHIVE")]))
    run(catalog.fail_forwards([ForwardFailure("ARCHIVE-0007", "gone", T0, dead=True)]))
    stats = {s.destination: s for s in run(catalog.forward_queues())}
    assert set(stats) == {"ARCHIVE", "WS1"}
    assert (stats["WS1"].waiting, stats["WS1"].dead, stats["WS1"].oldest_waiting) == (3, 0, T0 + 2)
    assert (stats["ARCHIVE"].waiting, stats["ARCHIVE"].dead) == (0, 1)
    assert stats["ARCHIVE"].oldest_waiting is None
    run(catalog.cancel_forwards("ARCHIVE", [], None))
    assert [s.destination for s in run(catalog.forward_queues())] == ["WS1"]


def test_pages_follow_the_enqueue_order(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(n) for n in range(10, 0, -1)]))
    assert _ids(run(catalog.forward_entries("WS1", None, 3))) == [
        "WS1-0001",
        "WS1-0002",
        "WS1-0003",
    ]
    assert _ids(run(catalog.forward_entries("WS1", None, 3, offset=8))) == [
        "WS1-0009",
        "WS1-0010",
    ]
    assert run(catalog.forward_entries("WS2", None, 3)) == []


def test_retry_makes_dead_entries_waiting_and_due_now(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(n) for n in range(1, 5)] + [_entry(1, "OTHER")]))
    dead = [ForwardFailure(f"WS1-000{n}", "refused", T0, dead=True) for n in (1, 2, 3)]
    run(catalog.fail_forwards([*dead, ForwardFailure("OTHER-0001", "refused", T0, dead=True)]))
    now = T0 + 1000
    assert run(catalog.retry_forwards("WS1", ["WS1-0002"], now)) == 1
    assert run(catalog.retry_forwards("WS1", ["OTHER-0001"], now)) == 0  # not its queue
    retried = run(catalog.forward_entries("WS1", ForwardState.WAITING, 10))
    assert _ids(retried) == ["WS1-0004", "WS1-0002"]  # its age starts again: now last
    assert retried[1].attempts == 0 and retried[1].enqueued_at == now
    assert run(catalog.retry_forwards("WS1", [], now)) == 2  # every dead one
    assert run(catalog.forward_entries("WS1", ForwardState.DEAD, 10)) == []
    assert len(run(catalog.claim_forwards("WS1", now, 10, LEASE))) == 4
    assert len(run(catalog.forward_entries("OTHER", ForwardState.DEAD, 10))) == 1


def test_cancel_removes_the_named_entries_or_a_whole_state(catalog: Catalog, run: Runner) -> None:
    run(catalog.enqueue_forwards([_entry(n) for n in range(1, 6)] + [_entry(1, "OTHER")]))
    run(catalog.fail_forwards([ForwardFailure("WS1-0005", "refused", T0, dead=True)]))
    assert run(catalog.cancel_forwards("WS1", ["WS1-0001", "OTHER-0001"], None)) == 1
    assert run(catalog.cancel_forwards("WS1", [], ForwardState.DEAD)) == 1
    assert _ids(run(catalog.forward_entries("WS1", None, 10))) == [
        "WS1-0002",
        "WS1-0003",
        "WS1-0004",
    ]
    assert run(catalog.cancel_forwards("WS1", [], None)) == 3
    assert run(catalog.forward_entries("WS1", None, 10)) == []
    assert len(run(catalog.forward_entries("OTHER", None, 10))) == 1
