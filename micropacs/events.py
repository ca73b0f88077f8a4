"""Events that flow between services, as versioned JSON (one module for all).

Every payload carries a ``type`` and a ``version``; a consumer refuses a
version it does not know instead of guessing (it goes to the dead-letter topic).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from micropacs.errors import InvalidInput
from micropacs.ports import InstanceRecord

INSTANCE_STORED = "instance.stored"
"""Topic of :class:`InstanceStored`, keyed by StudyInstanceUID."""

DEAD_LETTER = "dead-letter"
"""Topic where consumers park events they cannot process after retries."""


@dataclass(frozen=True, kw_only=True)
class InstanceStored(InstanceRecord):
    """An object is durable in the BlobStore (ARCHITECTURE.md, rule 1).

    The instance record the index writes, plus who sent the object and where
    it was received. ``header`` is the whole dataset as DICOM JSON without
    bulk data (PS3.18 F.2), so the index can store and match any attribute.
    """

    type: ClassVar[str] = INSTANCE_STORED
    version: ClassVar[int] = 1

    calling_ae: str
    called_ae: str
    site: str

    @property
    def key(self) -> str:
        """The partition key: a study's events stay in order on one partition."""
        return self.study_instance_uid

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        # Not dataclasses.asdict: it deep-copies the header, the costliest part.
        body = {"type": self.type, "version": self.version}
        body.update((f.name, getattr(self, f.name)) for f in fields(self))
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> InstanceStored:
        """Decode a payload, refusing other types, versions or missing fields."""
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"event is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidInput("event is not a JSON object")
        if body.pop("type", None) != cls.type or body.pop("version", None) != cls.version:
            raise InvalidInput(f"not a {cls.type} v{cls.version} event")
        try:
            return cls(**body)
        except TypeError as exc:
            raise InvalidInput(f"malformed {cls.type} event: {exc}") from exc


@dataclass(frozen=True)
class DeadLetter:
    """An event a consumer gave up on, with where it came from and why."""

    type: ClassVar[str] = DEAD_LETTER
    version: ClassVar[int] = 1

    source_topic: str
    partition: int
    offset: int
    key: str
    consumer_group: str
    reason: str
    payload_base64: str

    def to_bytes(self) -> bytes:
        """Encode as the versioned JSON payload."""
        body = {"type": self.type, "version": self.version, **asdict(self)}
        return json.dumps(body, separators=(",", ":")).encode()
