"""Catalog contract, audit trail: put_audit is idempotent by event id, audit() filters by
time, kind, actor, study and outcome, newest first (micropacs.ports.Catalog)."""

from __future__ import annotations

import pytest

from micropacs.errors import InvalidInput
from micropacs.ports import AuditQuery, AuditRecord, Catalog
from tests.contract.conftest import Runner

STUDY_A = "1.2.826.0.1.3680043.10.543.7.1"
STUDY_B = "1.2.826.0.1.3680043.10.543.7.2"


def _record(n: int, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "event_id": f"e{n:04d}",
        "time": f"2026-03-01T10:00:{n:02d}+00:00",
        "kind": "association",
        "outcome": 0,
        "actor": "CT01",
        "role": "requestor",
        "source": "10.0.0.7",
        "destination": "MICROPACS",
        "study_uids": (STUDY_A,),
        "patient_ids": ("P1",),
        "operations": {"C-STORE": 3},
        "detail": "",
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def _ids(records: list[AuditRecord]) -> list[str]:
    return [r.event_id for r in records]


def test_records_come_back_whole_newest_first(catalog: Catalog, run: Runner) -> None:
    records = [_record(n) for n in range(5)]
    run(catalog.put_audit(records))
    found = run(catalog.audit(AuditQuery()))
    assert _ids(found) == ["e0004", "e0003", "e0002", "e0001", "e0000"]
    assert found[-1].study_uids == (STUDY_A,)
    assert found[-1].patient_ids == ("P1",)
    assert found[-1].operations == {"C-STORE": 3}
    assert found[-1].time == "2026-03-01T10:00:00.000000+00:00"


def test_put_is_idempotent_by_event_id(catalog: Catalog, run: Runner) -> None:
    run(catalog.put_audit([_record(1), _record(2)]))
    run(catalog.put_audit([_record(2), _record(1), _record(3)]))
    assert _ids(run(catalog.audit(AuditQuery()))) == ["e0003", "e0002", "e0001"]


def test_an_empty_trail_answers_nothing(catalog: Catalog, run: Runner) -> None:
    assert run(catalog.audit(AuditQuery(kind="login"))) == []
    run(catalog.put_audit([]))


def test_filters_each_hold(catalog: Catalog, run: Runner) -> None:
    run(
        catalog.put_audit(
            [
                _record(1),
                _record(2, kind="login", actor="alice", study_uids=(), patient_ids=()),
                _record(3, kind="login-failed", actor="alice", outcome=4, study_uids=()),
                _record(4, study_uids=(STUDY_A, STUDY_B)),
                _record(5, actor="MR01", study_uids=(STUDY_B,), outcome=8),
            ]
        )
    )
    assert _ids(run(catalog.audit(AuditQuery(kind="login")))) == ["e0002"]
    assert _ids(run(catalog.audit(AuditQuery(actor="alice")))) == ["e0003", "e0002"]
    assert _ids(run(catalog.audit(AuditQuery(study_uid=STUDY_B)))) == ["e0005", "e0004"]
    assert _ids(run(catalog.audit(AuditQuery(study_uid=STUDY_A)))) == ["e0004", "e0001"]
    assert _ids(run(catalog.audit(AuditQuery(outcome=4)))) == ["e0003"]
    assert _ids(run(catalog.audit(AuditQuery(outcome=0, kind="association")))) == [
        "e0004",
        "e0001",
    ]
    # since inclusive, until exclusive; a time in another zone compares as the same instant
    window = AuditQuery(since="2026-03-01T10:00:02+00:00", until="2026-03-01T11:00:04+01:00")
    assert _ids(run(catalog.audit(window))) == ["e0003", "e0002"]
    assert _ids(run(catalog.audit(AuditQuery(since="2026-03-01T10:00:05")))) == ["e0005"]
    assert run(catalog.audit(AuditQuery(actor="nobody"))) == []


def test_limit_and_offset_page_newest_first(catalog: Catalog, run: Runner) -> None:
    run(catalog.put_audit([_record(n) for n in range(10)]))
    assert _ids(run(catalog.audit(AuditQuery(limit=3)))) == ["e0009", "e0008", "e0007"]
    assert _ids(run(catalog.audit(AuditQuery(limit=3, offset=8)))) == ["e0001", "e0000"]
    assert len(run(catalog.audit(AuditQuery(limit=0)))) == 10


@pytest.mark.parametrize(
    "query",
    [AuditQuery(limit=-1), AuditQuery(offset=-1), AuditQuery(since="yesterday")],
)
def test_bad_queries_are_refused(catalog: Catalog, run: Runner, query: AuditQuery) -> None:
    with pytest.raises(InvalidInput):
        run(catalog.audit(query))


def test_a_record_with_a_bad_time_is_refused(catalog: Catalog, run: Runner) -> None:
    with pytest.raises(InvalidInput):
        run(catalog.put_audit([_record(1, time="not a time")]))
