"""Retention and tiering policies, read from a YAML file (docs/lifecycle.md).

Each policy watches one storage group and either moves its studies to another group or
deletes them, the least recently received first (Conquest's "cleanup disk below X MB"
and "move to a second device"). What it selects:

* ``older_than_days`` alone: every study whose newest instance in the group was received
  more than that many days ago;
* ``free_below`` alone: while the group's free space is under the threshold, the least
  recently received studies, until the bytes they take would lift it to ``free_target``
  (default: the threshold);
* both: the same, among the studies older than ``older_than_days`` only.

A delete needs ``older_than_days`` (the retention period): nothing younger is ever
deleted. A group's free space is its folder's file system's (``statvfs``) or, with
``quota`` (an S3 bucket, or a share of a disk), the quota less the bytes the catalog
records in the group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError

from micropacs.config import GROUP_NAME, Settings
from micropacs.errors import InvalidSettings


class Policy(BaseModel):
    """One policy of the file (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
    group: str = Field(pattern=GROUP_NAME)
    action: Literal["move", "delete"]
    to: str | None = Field(None, pattern=GROUP_NAME)
    older_than_days: float | None = Field(None, gt=0)
    free_below: ByteSize | None = None
    free_target: ByteSize | None = None
    quota: ByteSize | None = None

    @property
    def by_free_space(self) -> bool:
        """Whether the group's free space decides how much it acts on."""
        return self.free_below is not None

    @property
    def target_free(self) -> int:
        """The free bytes it acts until (0 for a policy by age alone)."""
        if self.free_below is None:
            return 0
        return int(self.free_target if self.free_target is not None else self.free_below)


@dataclass(frozen=True)
class Policies:
    """The policies of the file, in its order."""

    policies: tuple[Policy, ...] = ()

    def named(self, name: str) -> Policy:
        """The policy called ``name``; InvalidSettings if there is none."""
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise InvalidSettings(f"no retention policy is called {name!r}")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[Policy] = Field(default_factory=list)


def _check(policy: Policy, where: str, in_s3: Callable[[str], bool]) -> None:
    """InvalidSettings for a policy that cannot work."""
    if policy.action == "move":
        if policy.to is None:
            raise InvalidSettings(f"{where}: a move names the group it moves 'to'")
        if policy.to == policy.group:
            raise InvalidSettings(f"{where}: 'to' is the group it moves from")
    elif policy.to is not None:
        raise InvalidSettings(f"{where}: a delete moves nothing: drop 'to'")
    if policy.action == "delete" and policy.older_than_days is None:
        raise InvalidSettings(
            f"{where}: a delete needs 'older_than_days' (the retention period): nothing"
            " younger is ever deleted"
        )
    if policy.older_than_days is None and policy.free_below is None:
        raise InvalidSettings(f"{where}: give 'older_than_days', 'free_below' or both")
    if policy.free_below is None and (policy.free_target or policy.quota):
        raise InvalidSettings(f"{where}: 'free_target' and 'quota' go with 'free_below'")
    below, target = policy.free_below, policy.free_target
    if below is not None and target is not None and target < below:
        raise InvalidSettings(f"{where}: 'free_target' is below 'free_below'")
    if policy.free_below is not None and policy.quota is None and in_s3(policy.group):
        raise InvalidSettings(
            f"{where}: group {policy.group!r} is in S3, which has no free space to read:"
            " give its 'quota'"
        )


def _local(group: str) -> bool:
    return False


def parse_policies(
    text: str, source: str = "retention policies", in_s3: Callable[[str], bool] = _local
) -> Policies:
    """The policies of a YAML document; InvalidSettings names the policy and the fix.
    ``in_s3`` tells which groups live in S3 (their free space needs a quota)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSettings(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidSettings(f"{source}: expected a mapping with a 'policies' list")
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidSettings(f"{source}: {problems}") from None
    names: set[str] = set()
    for index, policy in enumerate(parsed.policies):
        where = f"{source}: policy {policy.name!r} (policies[{index}])"
        if policy.name in names:
            raise InvalidSettings(f"{where}: another policy has this name; names must differ")
        names.add(policy.name)
        _check(policy, where, in_s3)
    return Policies(tuple(parsed.policies))


def load_policies(path: Path, in_s3: Callable[[str], bool] = _local) -> Policies:
    """The policies of the YAML file at ``path``; InvalidSettings says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSettings(f"retention policies {path}: cannot read the file: {exc}") from exc
    return parse_policies(text, str(path), in_s3)


def configured_policies(settings: Settings) -> Policies:
    """The policies of ``MICROPACS_RETENTION__POLICIES_FILE`` (none when unset), checked
    against where each group lives (``MICROPACS_STORAGE__GROUPS``, else ``blob_url``)."""
    path = settings.retention.policies_file
    if path is None:
        return Policies()

    def store(group: str) -> str:
        return settings.storage.groups.get(group, settings.blob_url)

    policies = load_policies(path, lambda group: store(group).startswith("s3://"))
    for policy in policies.policies:
        same = policy.to is not None and store(policy.to) == store(policy.group)
        if policy.by_free_space and policy.quota is None and same:
            raise InvalidSettings(
                f"{path}: policy {policy.name!r}: groups {policy.group!r} and {policy.to!r}"
                " share one store, so a move frees none of its space: give 'to' a store of"
                " its own (MICROPACS_STORAGE__GROUPS), or the group a 'quota'"
            )
    return policies
