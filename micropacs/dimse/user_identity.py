"""User Identity negotiation (PS3.7 D.3.3.7; the sub-items of PS3.8 D.3.3.7).

A requestor may name the user behind an association in its A-ASSOCIATE-RQ.
micropacs checks, with ``MICROPACS_DICOM__USER_IDENTITY`` ``optional`` or
``required``:

- type 2, user name and passcode: a local user (``micropacs users add``),
  its argon2 hash checked as for HTTP Basic;
- type 5, a JSON Web Token: with the OpenID Connect backend
  (``MICROPACS_AUTH__BACKEND=oidc``), checked as a bearer token is
  (signature, issuer, audience, expiry, roles claim);
- type 1, a user name alone, only with ``…_USER_IDENTITY_NAME_ONLY``: it
  proves nothing, so it gives no role (it satisfies ``required`` and a
  node's ``user_id``, nothing more).

A password or a token (types 2 and 5) is a secret: on an association that
is not TLS (PS3.15 B.9) it is not checked but rejected as not valid, unless
``MICROPACS_DICOM__USER_IDENTITY_PLAIN`` allows it (a network that is private
end to end), since anyone on the path could read it and use it, over HTTP
too. Kerberos (3) and SAML (4), and types not enabled, are treated as no
identity.
An identity presented that does not check out, or no identity when
``required`` or when the calling node has a ``user_id`` (which the identity
must then name), is rejected: A-ASSOCIATE-RJ rejected-permanent,
service-user, no-reason-given (PS3.8 9.3.4). A valid identity's role limits
the association as it limits HTTP: a viewer may query and retrieve, an
operator or administrator also store; the node's own permissions apply on
top. When the requestor asks for a positive response, a verified identity is
answered with one (a zero-length server response: micropacs has no
Kerberos ticket, SAML response or token of its own to return; its TLS
certificate is its proof).

Passcodes and tokens are never logged. The checks run on the bounded
credential-check pool (:mod:`micropacs.auth.throttle`); when it is full, or
the user name failed too often from the peer's address, the association is
rejected transient, service-provider (presentation), local-limit-exceeded
(PS3.8 9.3.4) at once.
"""

from __future__ import annotations

import logging
import ssl
import threading
import weakref
from collections.abc import Callable
from typing import Any, Literal

from pynetdicom import evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from micropacs.auth.local import LocalCredentials
from micropacs.auth.oidc import OidcTokens
from micropacs.auth.principal import Principal, Role
from micropacs.auth.throttle import ChecksBusy
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dimse import access, admission
from micropacs.dimse.access import Permission
from micropacs.ports import Catalog

log = logging.getLogger(__name__)

USERNAME, USERNAME_AND_PASSCODE, KERBEROS, SAML, JWT = 1, 2, 3, 4, 5
"""User-Identity-Type values (PS3.8 table D.3-14)."""

NEEDED = {Permission.STORE: Role.OPERATOR, Permission.QUERY: Role.VIEWER}
NEEDED[Permission.RETRIEVE] = Role.VIEWER
"""The role each operation needs; being a move destination concerns the other node."""

CHECK_SECONDS = 15.0
"""Longest wait for one verification (an identity provider's keys fetched, argon2)."""

SECRETS = frozenset({USERNAME_AND_PASSCODE, JWT})
"""The types whose fields would let an eavesdropper in."""

Passwords = Callable[[str, str, str], Principal | None]
"""Checks a user name and password from a client address."""
Tokens = Callable[[str, str], Principal | None]
"""Checks a token from a client address."""


def over_tls(assoc: Any) -> bool:
    """Whether ``assoc`` runs on a TLS connection."""
    connection = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    return isinstance(connection, ssl.SSLSocket)


class UserIdentity:
    """Checks each association's user identity and remembers its principal.

    Bind :meth:`check` to ``EVT_REQUESTED`` after the node check, and
    :meth:`answer` to ``EVT_USER_ID``; set it as ``ae.user_identity`` so that
    :func:`micropacs.dimse.access.permits` asks :meth:`permits`.
    ``passwords`` and ``tokens`` verify type 2 and type 5 identities (they
    block, in the association's thread); None leaves that type unsupported.
    """

    def __init__(
        self,
        mode: Literal["optional", "required"],
        *,
        passwords: Passwords | None,
        tokens: Tokens | None = None,
        name_only: bool = False,
        plain: bool = False,
    ) -> None:
        self.mode = mode
        self._plain = plain
        self._passwords = passwords
        self._tokens = tokens
        self._name_only = name_only
        self._lock = threading.Lock()
        self._principals: weakref.WeakKeyDictionary[Any, Principal] = weakref.WeakKeyDictionary()

    def check(self, event: evt.Event) -> None:
        """EVT_REQUESTED handler: reject an association whose identity does not do.

        It never raises: pynetdicom would skip the handlers bound after it.
        """
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None or assoc.is_rejected or assoc.is_aborted:
            return
        item = assoc.requestor.user_identity
        kind = int(item.user_identity_type or 0) if item is not None else 0
        address = str(assoc.requestor.address)
        clear = kind in SECRETS and not self._plain and not over_tls(assoc)
        try:
            principal = None if item is None or clear else self._verify(item, address)
        except ChecksBusy:
            log.warning(
                "association rejected: too many user identity checks",
                extra={"peer_address": address, "user_identity_type": kind},
            )
            access.reject(
                assoc,
                (
                    admission.REJECTED_TRANSIENT,
                    admission.PROVIDER_PRESENTATION,
                    admission.LOCAL_LIMIT_EXCEEDED,
                ),
            )
            return
        except Exception:  # a backend failed: let nobody in unchecked
            log.exception("association rejected: the user identity check failed")
            access.reject(
                assoc, (access.REJECTED_TRANSIENT, access.PROVIDER_ACSE, access.NO_REASON_GIVEN)
            )
            return
        nodes = getattr(assoc.ae, "node_access", None)
        node = nodes.node_of(assoc) if isinstance(nodes, access.NodeAccess) else None
        if clear and self._supported(kind):
            reason = "user identity not valid: a password or token without TLS"
        elif principal is None and item is not None and self._supported(kind):
            reason = "user identity not valid"
        elif principal is None and (self.mode == "required" or (node and node.user_id)):
            reason = "no user identity"
        elif (
            principal is not None and node is not None and node.user_id not in ("", principal.name)
        ):
            reason = "user identity is not the node's user"
        else:
            if principal is not None:
                with self._lock:
                    self._principals[assoc] = principal
            return
        log.warning(
            "association rejected: %s",
            reason,
            extra={
                "calling_ae": str(request.calling_ae_title).strip(),
                "peer_address": address,
                "user_identity_type": kind,
            },
        )
        access.reject(
            assoc, (access.REJECTED_PERMANENT, access.SERVICE_USER, access.NO_REASON_GIVEN)
        )

    def answer(self, event: evt.Event) -> tuple[bool, bytes | None]:
        """EVT_USER_ID handler: :meth:`check` already decided; send the positive response
        a requestor asked for when its identity was verified (PS3.8 D.3.3.7.2)."""
        assoc = event.assoc
        item = assoc.requestor.user_identity
        if item is not None and item.positive_response_requested and self.principal_of(assoc):
            response = UserIdentityNegotiation()
            # Zero length, as PS3.8 D.3.3.7.2 has it for types 1 and 2; we have no token of ours.
            response.server_response = b""
            assoc.acceptor.add_negotiation_item(response)
        return True, None  # pynetdicom adds no response of its own when given None

    def principal_of(self, assoc: Any) -> Principal | None:
        """The verified principal of an accepted association, None if it presented none."""
        with self._lock:
            return self._principals.get(assoc)

    def permits(self, assoc: Any, permission: Permission) -> bool:
        """Whether the principal's role allows ``permission`` (no principal: no limit)."""
        principal = self.principal_of(assoc)
        needed = NEEDED.get(permission)
        return principal is None or needed is None or principal.role.allows(needed)

    def _supported(self, kind: int) -> bool:
        return (
            (kind == USERNAME and self._name_only)
            or (kind == USERNAME_AND_PASSCODE and self._passwords is not None)
            or (kind == JWT and self._tokens is not None)
        )

    def _verify(self, item: UserIdentityNegotiation, address: str) -> Principal | None:
        kind = int(item.user_identity_type or 0)
        if not self._supported(kind):
            return None
        try:
            primary = bytes(item.primary_field or b"").decode()
            secondary = bytes(item.secondary_field or b"").decode()
        except UnicodeDecodeError:
            return None
        if not primary:
            return None
        if kind == USERNAME:
            # A name proves nothing: it gets no role limit of its own, only the node's.
            return Principal(name=primary, role=Role.ADMINISTRATOR, via="name")
        if kind == USERNAME_AND_PASSCODE and self._passwords is not None:
            return self._passwords(primary, secondary, address) if secondary else None
        if kind == JWT and self._tokens is not None:
            return self._tokens(primary, address)
        return None


def from_settings(
    settings: Settings, catalog: Catalog | None, bridge: LoopBridge
) -> UserIdentity | None:
    """The user identity check the settings ask for (None when it is off)."""
    mode = settings.dicom.user_identity
    if mode == "off":
        return None
    passwords: Passwords | None = None
    if catalog is not None:
        credentials = LocalCredentials(catalog)

        def passwords(name: str, password: str, address: str) -> Principal | None:
            return bridge.run(credentials.user_principal(name, password, address), CHECK_SECONDS)

    tokens: Tokens | None = None
    if settings.auth.backend == "oidc":
        oidc = OidcTokens(settings.auth)

        def tokens(token: str, address: str) -> Principal | None:
            return bridge.run(oidc.principal(token, address), CHECK_SECONDS)

    return UserIdentity(
        mode,
        passwords=passwords,
        tokens=tokens,
        name_only=settings.dicom.user_identity_name_only,
        plain=settings.dicom.user_identity_plain,
    )
