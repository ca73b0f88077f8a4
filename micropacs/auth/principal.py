"""Roles and the principal of a request.

Three roles, each allowed what the one before it may do (as dcm4chee's and
Orthanc's authorization plug-ins group them): a viewer reads (QIDO-RS,
WADO-RS, WADO-URI), an operator also writes (STOW-RS, and later sending,
deleting and the worklist), an administrator also manages (nodes, users,
tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a principal may do, from least to most."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"

    @property
    def rank(self) -> int:
        """Its place in the order viewer < operator < administrator."""
        return list(Role).index(self)

    def allows(self, required: Role) -> bool:
        """Whether a principal with this role may do what ``required`` may."""
        return self.rank >= required.rank


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's id, a user name or an OIDC subject, and its role."""

    name: str
    role: Role
    via: str
    """How it was authenticated: ``token``, ``user``, ``oidc`` or ``local`` (loopback, no
    authentication configured)."""


LOCAL_CLIENT = Principal(name="local", role=Role.ADMINISTRATOR, via="local")
"""A loopback client of a server bound to loopback with no authentication configured."""
