"""How the Kafka adapter secures its links: TLS and SASL options for aiokafka, and a
diagnosis naming the setting to fix when a broker refuses them.

Kafka's security protocols (``security.protocol``): ``PLAINTEXT``, ``SSL``
(TLS, with a client certificate if the listener requires one),
``SASL_PLAINTEXT`` and ``SASL_SSL`` (a SASL login, over TLS for the latter),
with the SASL mechanisms ``PLAIN`` (RFC 4616), ``SCRAM-SHA-256`` and
``SCRAM-SHA-512`` (RFC 5802, RFC 7677). TLS uses the BCP 195 profile of
:func:`micropacs.tls.harden`: TLS 1.2+, the broker's certificate checked
against the configured CA (or the system's trust store) and its host name.

aiokafka, failing to connect, says only "Unable to bootstrap from …";
:func:`diagnose` opens one connection itself to tell an untrusted
certificate, a refused login or a wrong protocol apart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from micropacs.errors import InvalidInput
from micropacs.tls import ClientTls

log = logging.getLogger(__name__)

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

SETTING = "MICROPACS_KAFKA__"
"""Prefix of the settings named in error messages."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security options of every Kafka client micropacs opens."""

    protocol: Protocol = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sasl_mechanism: Mechanism = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)

    @property
    def tls(self) -> bool:
        """Whether the link is encrypted."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """Whether the client logs in with SASL."""
        return self.protocol.startswith("SASL_")

    def check(self) -> None:
        """Raise InvalidInput for options that contradict one another."""
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise InvalidInput(
                f"{SETTING}CA_FILE, CERT_FILE and KEY_FILE need {SETTING}SECURITY_PROTOCOL"
                f" SSL or SASL_SSL, not {self.protocol}"
            )
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise InvalidInput(
                f"{SETTING}SECURITY_PROTOCOL={self.protocol} needs {SETTING}SASL_USERNAME"
                f" and {SETTING}SASL_PASSWORD"
            )
        if self.protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            log.warning("Kafka SASL PLAIN over SASL_PLAINTEXT sends the password in clear")

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for producers, consumers and admin clients."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            try:
                options["ssl_context"] = ClientTls(
                    self.ca_file, self.cert_file, self.key_file
                ).context()
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(
                    f"Kafka TLS files do not load ({exc}): check {SETTING}CA_FILE,"
                    f" {SETTING}CERT_FILE and {SETTING}KEY_FILE"
                ) from exc
        if self.sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options


def _host_port(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or first, int(port) if port.isdigit() else 9092


async def diagnose(bootstrap: str, security: KafkaSecurity, timeout: float = 10.0) -> str:  # noqa: ASYNC109
    """Why a client with ``security`` cannot talk to the first broker of ``bootstrap``,
    as advice naming the setting to fix; empty when one connection succeeds.

    ``timeout`` is the request timeout of the client whose failure this explains: a
    busy broker that refused that client's login in time refuses this one in time too.
    """
    host, port = _host_port(bootstrap)
    options = security.client_options()
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(timeout * 1000), **options),
            timeout=timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the broker's TLS certificate is not trusted ({exc.verify_message}): check"
            f" {SETTING}CA_FILE"
        )
    except ssl.SSLError as exc:
        return (
            f"TLS handshake failed ({exc.reason or exc}): check that the listener speaks"
            f" {security.protocol}, and {SETTING}CERT_FILE/KEY_FILE if it requires a client"
            " certificate"
        )
    except SaslAuthenticationFailed:
        return (
            f"SASL {security.sasl_mechanism} login refused: check {SETTING}SASL_USERNAME and"
            f" {SETTING}SASL_PASSWORD (and {SETTING}SASL_MECHANISM)"
        )
    except UnsupportedSaslMechanismError as exc:
        return f"{exc}: check {SETTING}SASL_MECHANISM"
    except TimeoutError:
        return (
            f"no answer within {timeout}s (a broker too busy to answer, or a listener that"
            f" does not speak {security.protocol}: check {SETTING}SECURITY_PROTOCOL)"
        )
    except (KafkaError, ConnectionError) as exc:
        # Under TLS 1.3 a listener that requires a client certificate accepts the
        # handshake and then closes the connection: the client sees only that.
        certificate = (
            f", and {SETTING}CERT_FILE/KEY_FILE if it requires a client certificate"
            if security.tls
            else ""
        )
        return (
            f"no Kafka answer ({type(exc).__name__}): check that {SETTING}SECURITY_PROTOCOL"
            f" ({security.protocol}) is the listener's{certificate}"
        )
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"
    conn.close()
    return ""
