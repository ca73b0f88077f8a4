"""The journal of moves: what a move may leave behind, kept where it cannot be lost.

Before a study's objects are copied, an entry naming every old and new key is written
(durably, like any object) into the source group's own store, under
``<group>/moves/<id>.json`` (no key made of UIDs starts so). Once the catalog switched
to the new keys, the entry is written again with that time. It is finished, by a later
look, when its grace period has passed since the switch (or, for an entry that never
switched, a day after it was written: a copy a crash interrupted): then every one of its
keys that no record of the catalog points at is removed, old and new alike, and the
entry with them. So a kill -9 at any point of a move leaves the study readable at the
keys its records name and, later, no object behind that nothing names.

No table in the catalog is needed, and the entries of a group live and go with it.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace

from micropacs.errors import InvalidInput, NotFound
from micropacs.ports import BlobStore

FOLDER = "moves"
"""The folder of a group's journal, under the group's prefix."""
VERSION = 1


@dataclass(frozen=True)
class MoveEntry:
    """One study's move from ``from_group`` to ``to_group``: its (old, new) key pairs, the
    bytes it copies (``size``), when it was written and when the catalog switched ("" not yet).
    Times are seconds since the epoch."""

    entry_id: str
    study_uid: str
    from_group: str
    to_group: str
    keys: tuple[tuple[str, str], ...]
    size: int
    written_at: float
    switched_at: float = 0.0

    @property
    def key(self) -> str:
        """Where the entry lies in the BlobStore."""
        return f"{self.from_group}/{FOLDER}/{self.entry_id}.json"

    def switched(self, when: float) -> MoveEntry:
        """The entry once the catalog switched at ``when``."""
        return replace(self, switched_at=when)

    def to_bytes(self) -> bytes:
        """The entry as stored (JSON)."""
        return json.dumps(
            {
                "version": VERSION,
                "study": self.study_uid,
                "from": self.from_group,
                "to": self.to_group,
                "keys": [list(pair) for pair in self.keys],
                "bytes": self.size,
                "written_at": self.written_at,
                "switched_at": self.switched_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, entry_id: str, data: bytes) -> MoveEntry:
        """The entry stored as ``data``; InvalidInput if it is not one."""
        try:
            raw = json.loads(data)
            return cls(
                entry_id=entry_id,
                study_uid=str(raw["study"]),
                from_group=str(raw["from"]),
                to_group=str(raw["to"]),
                keys=tuple((str(old), str(new)) for old, new in raw["keys"]),
                size=int(raw["bytes"]),
                written_at=float(raw["written_at"]),
                switched_at=float(raw.get("switched_at") or 0.0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"move journal entry {entry_id}: not readable ({exc})") from exc


def new_entry(
    study_uid: str,
    from_group: str,
    to_group: str,
    keys: Iterable[tuple[str, str]],
    size: int,
    now: float,
) -> MoveEntry:
    """A fresh entry for a move about to start."""
    return MoveEntry(
        entry_id=uuid.uuid4().hex,
        study_uid=study_uid,
        from_group=from_group,
        to_group=to_group,
        keys=tuple(keys),
        size=size,
        written_at=now,
    )


async def write(blobs: BlobStore, entry: MoveEntry) -> None:
    """Store (or replace) the entry; durable when this returns."""
    data = entry.to_bytes()
    await blobs.put(entry.key, io.BytesIO(data), len(data))


async def remove(blobs: BlobStore, entry: MoveEntry) -> None:
    """Remove the entry (an absent one is no error)."""
    await blobs.delete(entry.key)


async def entries(blobs: BlobStore, groups: Iterable[str]) -> AsyncIterator[MoveEntry]:
    """Every readable entry of the journals of ``groups``; an unreadable one is skipped
    (and left for an operator to look at)."""
    for group in sorted(set(groups)):
        prefix = f"{group}/{FOLDER}/"
        keys = sorted([key async for key in blobs.iterate(prefix)])
        for key in keys:
            name = key[len(prefix) :]
            if "/" in name or not name.endswith(".json"):
                continue
            try:
                data = b"".join([chunk async for chunk in blobs.read(key)])
                yield MoveEntry.from_bytes(name.removesuffix(".json"), data)
            except (NotFound, InvalidInput):
                continue  # gone since it was listed, or not one of ours
