"""Catalog contract, the pending Instance Availability Notifications: noted per study and
destination, postponed by later instances, claimed once due (or at once while performed
steps wait), leased, settled only as claimed, rescheduled after a failure, counted
(micropacs.ports.NoticeQueue)."""

from __future__ import annotations

from micropacs.ports import Catalog, PendingNotice, StepReferences
from tests.contract.conftest import Runner

T0 = 1_780_000_000.0
"""A time in 2026, seconds since the epoch."""
LEASE = 30.0
STUDY = "1.2.826.0.1.3680043.10.543.7.1"
OTHER = "1.2.826.0.1.3680043.10.543.7.2"
STEP = StepReferences(
    "1.2.826.0.1.3680043.10.543.7.100",
    (("1.2.826.0.1.3680043.10.543.7.10", ("1.2.826.0.1.3680043.10.543.7.11",)),),
)


def _keys(notices: list[PendingNotice]) -> list[tuple[str, str]]:
    return [(n.study_instance_uid, n.destination) for n in notices]


def test_a_notice_per_destination_is_claimed_once_due_and_leased(
    catalog: Catalog, run: Runner
) -> None:
    run(catalog.note_instances(STUDY, ["RIS", "HIS"], T0 + 60, 0, 41))
    run(catalog.note_instances(OTHER, ["RIS"], T0 + 30, 0, 42))
    assert run(catalog.notice_backlog()) == {"HIS": 1, "RIS": 2}
    assert run(catalog.claim_notices(T0 + 10, 10, LEASE)) == []
    first = run(catalog.claim_notices(T0 + 60, 10, LEASE))
    assert _keys(first) == [(OTHER, "RIS"), (STUDY, "HIS"), (STUDY, "RIS")]
    notice = first[1]
    assert (notice.due_at, notice.attempts, notice.bus_partition, notice.bus_offset) == (
        T0 + 60,
        0,
        0,
        41,
    )
    assert notice.steps == () and notice.token
    # Leased: nobody else gets them until the lease ends (its router died), or released.
    assert run(catalog.claim_notices(T0 + 61, 10, LEASE)) == []
    assert _keys(run(catalog.claim_notices(T0 + 61 + LEASE, 1, LEASE))) == [(OTHER, "RIS")]
    run(catalog.release_notices([first[1]]))
    assert _keys(run(catalog.claim_notices(T0 + 62, 10, LEASE))) == [(STUDY, "HIS")]


def test_a_later_instance_postpones_the_notice_and_a_stale_claim_removes_nothing(
    catalog: Catalog, run: Runner
) -> None:
    run(catalog.note_instances(STUDY, ["RIS"], T0 + 60, 0, 1))
    [claimed] = run(catalog.claim_notices(T0 + 60, 10, LEASE))
    run(catalog.note_instances(STUDY, ["RIS"], T0 + 120, 0, 2))
    # Sent what it read, but more arrived meanwhile: the newer notice stays, unleased.
    assert run(catalog.settle_notice(claimed, None)) is False
    assert run(catalog.claim_notices(T0 + 119, 10, LEASE)) == []
    [again] = run(catalog.claim_notices(T0 + 120, 10, LEASE))
    assert (again.due_at, again.bus_offset) == (T0 + 120, 2)
    assert again.token != claimed.token
    assert run(catalog.settle_notice(again, None)) is True
    assert run(catalog.notice_backlog()) == {}
    assert run(catalog.settle_notice(again, None)) is False  # settled twice: nothing left


def test_a_failed_attempt_is_counted_and_due_again_later(catalog: Catalog, run: Runner) -> None:
    run(catalog.note_instances(STUDY, ["RIS"], T0, 0, 1))
    [claimed] = run(catalog.claim_notices(T0, 10, LEASE))
    assert run(catalog.settle_notice(claimed, T0 + 5)) is False
    assert run(catalog.claim_notices(T0 + 4, 10, LEASE)) == []
    [retry] = run(catalog.claim_notices(T0 + 5, 10, LEASE))
    assert retry.attempts == 1 and retry.due_at == T0 + 5
    run(catalog.settle_notice(retry, T0 + 15))
    [third] = run(catalog.claim_notices(T0 + 15, 10, LEASE))
    assert third.attempts == 2
    # New instances start its attempts again, from the quiet period.
    run(catalog.note_instances(STUDY, ["RIS"], T0 + 100, 0, 2))
    run(catalog.release_notices([third]))
    assert run(catalog.claim_notices(T0 + 99, 10, LEASE)) == []
    [fresh] = run(catalog.claim_notices(T0 + 100, 10, LEASE))
    assert fresh.attempts == 0


def test_performed_steps_are_claimed_before_the_notice_is_due(
    catalog: Catalog, run: Runner
) -> None:
    run(catalog.note_instances(STUDY, ["RIS"], T0 + 60, 0, 7))
    run(catalog.note_performed_step(STUDY, ["RIS"], T0 + 300, STEP))
    [claimed] = run(catalog.claim_notices(T0 + 1, 10, LEASE))
    # The pending notice keeps its due time and its place on the bus.
    assert (claimed.due_at, claimed.bus_offset, claimed.steps) == (T0 + 60, 7, (STEP,))
    run(catalog.release_notices([claimed]))
    changed = StepReferences(STEP.sop_instance_uid, ())
    second = StepReferences("1.2.826.0.1.3680043.10.543.7.200", STEP.series)
    run(catalog.note_performed_step(STUDY, ["RIS"], T0 + 300, changed))
    run(catalog.note_performed_step(STUDY, ["RIS"], T0 + 300, second))
    [merged] = run(catalog.claim_notices(T0 + 2, 10, LEASE))
    assert merged.steps == (changed, second)
    # A step of a study with nothing pending creates its notice, due when the step says.
    run(catalog.note_performed_step(OTHER, ["RIS", "HIS"], T0 + 300, STEP))
    created = run(catalog.claim_notices(T0 + 3, 10, LEASE))
    assert _keys(created) == [(OTHER, "HIS"), (OTHER, "RIS")]
    assert {(n.due_at, n.bus_offset, n.steps) for n in created} == {(T0 + 300, -1, (STEP,))}


def test_a_notice_with_steps_that_failed_waits_for_its_retry(catalog: Catalog, run: Runner) -> None:
    run(catalog.note_performed_step(STUDY, ["RIS"], T0 + 300, STEP))
    [claimed] = run(catalog.claim_notices(T0, 10, LEASE))
    run(catalog.settle_notice(claimed, T0 + 20))
    assert run(catalog.claim_notices(T0 + 1, 10, LEASE)) == []
    [retry] = run(catalog.claim_notices(T0 + 20, 10, LEASE))
    assert retry.steps == (STEP,) and retry.attempts == 1


def test_nothing_noted_reads_as_empty(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.notice_backlog()) == {}
    assert run(catalog.claim_notices(T0, 10, LEASE)) == []
    run(catalog.note_instances(STUDY, [], T0, 0, 1))
    run(catalog.note_performed_step(STUDY, [], T0, STEP))
    assert run(catalog.notice_backlog()) == {}
