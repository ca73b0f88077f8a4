"""The retention policies file (services/router/retention_policies.py) and the nightly
schedule (services/router/retention_task.py): what is refused at start, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from micropacs.config import RetentionSettings, Settings, StorageSettings
from micropacs.errors import InvalidSettings
from services.router.retention_policies import configured_policies, parse_policies
from services.router.retention_task import next_nightly


def one(policy: str, in_s3: bool = False) -> str:
    """The error of a file with one policy (of these YAML lines)."""
    text = "policies:\n  - " + "\n    ".join(policy.strip().splitlines())
    with pytest.raises(InvalidSettings) as refused:
        parse_policies(text, "policies.yaml", lambda group: in_s3)
    return str(refused.value)


def test_a_valid_file() -> None:
    policies = parse_policies(
        """
policies:
  - name: tier
    group: default
    action: move
    to: archive
    older_than_days: 90
    free_below: 50GB
    free_target: 60GB
  - name: purge
    group: archive
    action: delete
    older_than_days: 3650
"""
    )
    tier, purge = policies.policies
    assert (tier.by_free_space, tier.target_free) == (True, 60 * 10**9)
    assert (purge.by_free_space, purge.target_free, purge.to) == (False, 0, None)
    assert policies.named("purge") is purge
    assert parse_policies("").policies == ()


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        (
            "name: a\ngroup: default\naction: move\nolder_than_days: 1",
            "names the group it moves 'to'",
        ),
        (
            "name: a\ngroup: default\naction: move\nto: default\nolder_than_days: 1",
            "'to' is the group",
        ),
        ("name: a\ngroup: default\naction: delete\nfree_below: 1GB", "needs 'older_than_days'"),
        ("name: a\ngroup: default\naction: delete\nto: x\nolder_than_days: 1", "drop 'to'"),
        ("name: a\ngroup: default\naction: move\nto: archive", "'older_than_days', 'free_below'"),
        ("name: a\ngroup: default\naction: move\nto: b\nolder_than_days: 1\nquota: 1TB", "go with"),
        (
            "name: a\ngroup: default\naction: move\nto: b\nfree_below: 2GB\nfree_target: 1GB",
            "'free_target' is below",
        ),
        ("name: a\ngroup: Default\naction: move\nto: b\nolder_than_days: 1", "group"),
        ("name: a\ngroup: default\naction: archive\nolder_than_days: 1", "action"),
        ("name: a\ngroup: default\naction: move\nto: b\nolder_than_days: 0", "older_than_days"),
        ("name: a\ngroup: default\naction: move\nto: b\nolder_than_days: 1\nage: 3", "age"),
    ],
)
def test_what_is_refused(policy: str, says: str) -> None:
    assert says in one(policy)


def test_free_space_of_an_s3_group_needs_a_quota() -> None:
    policy = "name: a\ngroup: default\naction: move\nto: b\nfree_below: 1GB"
    assert "give its 'quota'" in one(policy, in_s3=True)
    parse_policies(
        "policies:\n  - " + "\n    ".join([*policy.splitlines(), "quota: 2TB"]),
        in_s3=lambda group: True,
    )


def test_names_differ() -> None:
    twice = "  - {name: a, group: default, action: move, to: b, older_than_days: 1}\n"
    with pytest.raises(InvalidSettings, match="another policy has this name"):
        parse_policies("policies:\n" + twice + twice)


def test_not_yaml_or_not_a_mapping() -> None:
    with pytest.raises(InvalidSettings, match="not valid YAML"):
        parse_policies("policies: [")
    with pytest.raises(InvalidSettings, match="a mapping"):
        parse_policies("- 1")


def test_the_next_nightly_run_is_the_next_time_at_that_local_hour() -> None:
    local = datetime(2026, 12, 3, 1, 30, tzinfo=UTC).astimezone()
    at = f"{(local + timedelta(minutes=30)).hour:02d}:{(local + timedelta(minutes=30)).minute:02d}"
    now = local.timestamp()
    assert next_nightly(now, at) == now + 1800
    # At that very minute the run is the next day's.
    assert next_nightly(now + 1800, at) == now + 1800 + 86400
    assert next_nightly(now, "") is None


def test_a_move_for_free_space_needs_a_target_on_another_store(tmp_path: Path) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text(
        "policies:\n  - {name: room, group: default, action: move, to: archive, free_below: 1GB}\n"
    )
    settings = Settings(data_dir=tmp_path, retention=RetentionSettings(policies_file=policy))
    with pytest.raises(InvalidSettings, match="share one store"):
        configured_policies(settings)
    apart = settings.model_copy(
        update={"storage": StorageSettings(groups={"archive": f"file://{tmp_path / 'archive'}"})}
    )
    assert [p.name for p in configured_policies(apart).policies] == ["room"]
