"""Settings of every micropacs service, read from ``MICROPACS_`` environment variables.

Nesting uses ``__``: ``MICROPACS_DICOM__PORT=104`` sets ``settings.dicom.port``.
Each service reads only the parts it needs. Nothing is read at import: call
:func:`load_settings` in a service's entry point.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DicomTlsSettings(BaseModel):
    """DICOM TLS (PS3.15 B.9, the BCP 195 profile: TLS 1.2+) on a port of its own."""

    port: int = Field(
        2762,
        ge=0,
        le=65535,
        description="DICOM TLS port (2762, IANA dicom-tls; 0 picks a free one); listened on"
        " only when cert_file is set.",
    )
    cert_file: Path | None = Field(
        None,
        description="PEM certificate chain of our AE, for the TLS port and presented on TLS"
        " associations we open; reloaded when the file changes. Unset: no TLS port.",
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file (default: in cert_file itself)."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificates: when set, TLS callers must present a certificate"
        " they issued, and nodes marked TLS are verified against them (else against the"
        " system's trust store).",
    )


class HttpTlsSettings(BaseModel):
    """HTTPS on the HTTP port (TLS 1.2+, the BCP 195 profile)."""

    cert_file: Path | None = Field(
        None,
        description="PEM certificate chain: when set, the HTTP port speaks only HTTPS;"
        " reloaded when the file changes.",
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file (default: in cert_file itself)."
    )


class DicomSettings(BaseModel):
    """The DIMSE endpoint: one AE title and port for every service."""

    host: str = Field("127.0.0.1", description="Address the DICOM port listens on.")
    port: int = Field(11112, ge=0, le=65535, description="DICOM TCP port (0 picks a free one).")
    ae_title: str = Field("MICROPACS", min_length=1, max_length=16, description="Our AE title.")
    max_pdu: int = Field(
        1 << 20,
        ge=0,
        description="Largest P-DATA PDU we advertise and accept, bytes (PS3.8 D.1); a longer"
        " one is aborted. 0 means unlimited: memory then grows with what a peer claims.",
    )
    network_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds of silence before abort, also inside a PDU; each MiB of a PDU"
        " must arrive within this time.",
    )
    acse_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a new connection has to deliver its whole A-ASSOCIATE-RQ (ARTIM).",
    )
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a DIMSE message.")
    strict_nodes: bool = Field(
        False,
        description="Reject associations from calling AE titles not in the node registry"
        " (calling-AE-title-not-recognized, PS3.8 9.3.4). Registered nodes are held to their"
        " addresses and permissions either way.",
    )
    open: bool = Field(
        False,
        description="Serve DICOM on a non-loopback host to any calling AE title without User"
        " Identity (strict_nodes off, user_identity not required): only on a closed network."
        " Without it such a server refuses to start.",
    )
    max_associations: int = Field(64, ge=1, description="Concurrent associations per process.")
    max_pending: int = Field(
        16,
        ge=1,
        description="Connections per process still awaiting their A-ASSOCIATE-RQ (at most half"
        " of max_associations); a new one beyond this closes the oldest, so stalled sockets"
        " cannot lock modalities out.",
    )
    max_associations_per_address: int = Field(
        32,
        ge=1,
        description="Concurrent associations per process from one peer IP address; the excess is"
        " rejected transient, local-limit-exceeded (PS3.8 9.3.4).",
    )
    max_associations_per_calling_ae: int = Field(
        16,
        ge=1,
        description="Concurrent associations per process from one calling AE title; the excess is"
        " rejected transient, local-limit-exceeded (PS3.8 9.3.4).",
    )
    accept_any_called_ae: bool = Field(
        False,
        description="Accept associations whatever called AE title they name; by default one"
        " not ours is rejected, called-AE-title-not-recognized (PS3.8 9.3.4).",
    )
    user_identity: Literal["off", "optional", "required"] = Field(
        "off",
        description="User Identity negotiation (PS3.7 D.3.3.7): off ignores it; optional checks"
        " an identity when one is presented (a user name and password of a local user, or an"
        " OpenID Connect JWT when MICROPACS_AUTH__BACKEND=oidc) and rejects the association if"
        " it does not check out; required also rejects associations without one. The"
        " identity's role limits what the association may do.",
    )
    user_identity_name_only: bool = Field(
        False,
        description="Accept a user name without password (User Identity type 1) as an identity:"
        " it proves nothing, so it only satisfies required and a node's user_id and gives no"
        " role limit.",
    )
    user_identity_plain: bool = Field(
        False,
        description="Check passwords and tokens (User Identity types 2 and 5) sent on an"
        " association without TLS; by default they are rejected as not valid, since anyone on"
        " the path could read them.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes sharing the DICOM port (SO_REUSEPORT), each running ingest and qr.",
    )
    tls: DicomTlsSettings = Field(default_factory=DicomTlsSettings)


class HttpSettings(BaseModel):
    """The HTTP endpoint: /healthz, /readyz, /metrics and DICOMweb under /dicom-web."""

    host: str = Field("127.0.0.1", description="Address the HTTP port listens on.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins allowed to call DICOMweb from a browser (JSON list; none by"
        ' default; ["*"]: any).',
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Base URL clients reach this server at (e.g. https://pacs.example.org), used"
        " in RetrieveURLs and BulkDataURIs; default: http://<host>:<bound port> (the machine's"
        " name when bound to every address). Never taken from a request's Host header.",
    )
    max_header_bytes: int = Field(
        32768, ge=1024, description="Largest request line and header block, bytes (else 431)."
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a complete request line and headers, from"
        " connecting or from the end of the previous response (else the connection is closed).",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection stays open."
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open connections (and requests in progress) beyond which requests get 503.",
    )
    max_body_bytes: int = Field(
        16 * 2**20,
        ge=0,
        description="Largest request body of every route but STOW-RS, bytes (else 413).",
    )
    idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request body may go without a byte arriving (else 408), or a"
        " response without the client taking a byte (else the connection is closed).",
    )
    stow_max_bytes: int = Field(
        4 * 2**30, ge=0, description="Largest STOW-RS request body, bytes (else 413)."
    )
    stow_max_parts: int = Field(
        10000, ge=1, description="Most instances (parts) in one STOW-RS request (else 413)."
    )
    stow_timeout: float = Field(
        3600.0,
        gt=0,
        description="Seconds one STOW-RS request body may take to arrive in total (else 408).",
    )
    tls: HttpTlsSettings = Field(default_factory=HttpTlsSettings)


class AuthSettings(BaseModel):
    """Who may call the HTTP APIs (DICOMweb): API tokens and users, or OpenID Connect."""

    backend: Literal["local", "oidc", "off"] | None = Field(
        None,
        description="local: API tokens and users of `micropacs tokens`/`users`; oidc: bearer"
        " tokens of an OpenID Connect provider; off: no authentication (explicit). Unset: a"
        " server bound to loopback answers local clients without credentials, any other"
        " refuses to start.",
    )
    metrics_open: bool = Field(
        True, description="Serve /metrics without credentials (for Prometheus)."
    )
    oidc_issuer: str = Field("", description="The provider's issuer URL (the iss claim).")
    oidc_audience: str = Field("", description="The audience tokens must name (the aud claim).")
    oidc_jwks_url: str = Field(
        "", description="The provider's JWKS URL; default: from its discovery document."
    )
    oidc_roles_claim: str = Field(
        "roles", description="Claim holding the roles, dotted for nested (realm_access.roles)."
    )
    oidc_role_prefix: str = Field(
        "", description="Prefix of the role values meant for micropacs (e.g. 'micropacs-')."
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "PS256"],
        description="Signature algorithms accepted (JSON list); never 'none' or HMAC.",
    )
    oidc_leeway: float = Field(30.0, ge=0, description="Seconds of clock skew tolerated.")
    oidc_client_id: str = Field(
        "", description="Client id of micropacs at the provider, for browser login (SSO)."
    )
    oidc_client_secret: SecretStr = Field(
        SecretStr(""), description="Client secret for browser login (a secret; empty: public)."
    )
    oidc_client_secret_file: Path | None = Field(
        None, description="File holding the client secret (read at start; beats the variable)."
    )
    oidc_redirect_url: str = Field(
        "",
        description="Redirect URI registered at the provider; default: the URL the browser"
        " used, ending /login/oidc/callback.",
    )
    oidc_scopes: str = Field(
        "openid profile email", description="Scopes asked for at browser login."
    )
    session_key: SecretStr = Field(
        SecretStr(""),
        description="Key signing browser session cookies (a secret, 32+ characters); empty:"
        " one generated per process, so sessions end at restart.",
    )
    session_key_file: Path | None = Field(
        None, description="File holding the session key (beats the variable)."
    )
    session_idle_timeout: float = Field(
        1800.0, gt=0, description="Seconds without a request after which a session ends."
    )
    session_lifetime: float = Field(
        28800.0, gt=0, description="Seconds after login after which a session ends anyway."
    )
    session_cookie_secure: bool | None = Field(
        None,
        description="Mark session cookies Secure; unset: when the request came over TLS"
        " (set true behind a TLS-terminating proxy).",
    )

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        """A shared-secret (HS*) or absent ('none') signature proves nothing about the issuer."""
        refused = [a for a in algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if refused or not algorithms:
            raise ValueError(f"use asymmetric signature algorithms (RS256, ES256…), not {refused}")
        return algorithms


GROUP_NAME = r"^[a-z0-9][a-z0-9-]{0,30}$"
"""A storage group's name: the first segment of its objects' keys."""


class StorageSettings(BaseModel):
    """Where objects, events and metadata live, chosen by URL scheme."""

    blob_url: str | None = Field(
        None, description="file:///path or s3://bucket; default: file://<data_dir>/objects."
    )
    bus_url: str | None = Field(
        None, description="sqlite:///path or kafka://host:port; default: <data_dir>/events.db."
    )
    catalog_url: str | None = Field(
        None, description="sqlite:///path or mongodb://…; default: <data_dir>/catalog.db."
    )
    worklist_url: str | None = Field(
        None,
        description="sqlite:///path or mongodb://…; default: the catalog's MongoDB database"
        " when the catalog is MongoDB, else <data_dir>/worklist.db.",
    )
    group: str = Field(
        "default",
        pattern=GROUP_NAME,
        description="Storage group (FS group) new objects go to (lowercase, digits, '-').",
    )
    groups: dict[str, str] = Field(
        default_factory=dict,
        description="Storage groups with a store of their own, as JSON: group name to"
        ' file:///path or s3://host/bucket (e.g. {"archive": "file:///mnt/archive"});'
        " every other group, the default one included, lives at blob_url (docs/lifecycle.md).",
    )
    fsync: bool = Field(
        True, description="fsync each object before answering Success (survives power loss)."
    )
    compression: Literal["none", "rle", "jpeg-ls", "jpeg2000"] = Field(
        "none",
        description="Lossless compression at rest of uncompressed images of this storage group"
        " (none: store as received); the original transfer syntax is recorded.",
    )

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.fullmatch(GROUP_NAME, name):
                raise ValueError(f"{name!r} is not a storage group name (lowercase, digits, '-')")
            if not url.startswith(("file://", "s3://")):
                raise ValueError(f"the store of group {name!r} is not a file:// or s3:// URL")
        return value


class S3Settings(BaseModel):
    """Credentials of the S3 object store (MinIO, Ceph RGW, SeaweedFS, a cloud S3)."""

    access_key: str = Field("", description="S3 access key.")
    secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key (a secret).")
    region: str | None = Field(None, description="S3 region, if the service needs one.")
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the object store's HTTPS certificate must chain to"
        " (for an s3://…?secure=true URL); default: the system's trust store.",
    )


class KafkaSettings(BaseModel):
    """The Kafka event bus, and how its links are secured (TLS and SASL, as the broker's
    listener requires)."""

    partitions: int = Field(
        4, ge=1, description="Partitions of each topic created; index scales to this."
    )
    replication_factor: int = Field(1, ge=1, description="Replicas of each topic created.")
    publish_timeout: float = Field(
        10.0, gt=0, description="Seconds a publish may wait for acks=all before the store fails."
    )
    topic_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]{0,100}$",
        description="Prefix of every topic name (e.g. 'site1.'), so several sites share a cluster.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="The broker listener's protocol: SSL (TLS, optionally with a client"
        " certificate), SASL_SSL (TLS and a SASL login), SASL_PLAINTEXT or PLAINTEXT (neither:"
        " events, which carry patient names, travel in clear).",
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the brokers' certificates must chain to (SSL,"
        " SASL_SSL); default: the system's trust store. Host names are always checked.",
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate presented to brokers that ask for one (SSL)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file (default: in cert_file itself)."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism of SASL_SSL and SASL_PLAINTEXT (PLAIN sends the password"
        " itself: only over SASL_SSL).",
    )
    sasl_username: str = Field("", description="SASL user name (SASL_SSL, SASL_PLAINTEXT).")
    sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (a secret).")


class IndexSettings(BaseModel):
    """The index consumer."""

    group: str = Field("index", description="Consumer group name on the event bus.")
    batch_size: int = Field(200, ge=1, description="Events written to the catalog per commit.")
    poll_interval: float = Field(0.2, gt=0, description="Seconds between polls when idle.")


class RouterSettings(BaseModel):
    """Forwarding by rules (docs/routing.md): the rules file, the queues' retries and limits."""

    rules_file: Path | None = Field(
        None,
        description="YAML file of the routing rules, read by the router (forward) and the"
        " ingest (coerce, before storing); unset: nothing is forwarded (queued entries are"
        " still sent) nor coerced. Read at start: an invalid file stops the start.",
    )
    group: str = Field("router", description="Consumer group name on the event bus.")
    batch_size: int = Field(200, ge=1, description="Events routed per commit.")
    poll_interval: float = Field(0.2, gt=0, description="Seconds between polls when idle.")
    send_batch: int = Field(
        50, ge=1, description="Queue entries claimed at once and sent on one association."
    )
    lease: float = Field(
        120.0,
        gt=0,
        description="Seconds a claimed batch stays reserved to its router; entries of a"
        " router killed mid-send are sent again after it.",
    )
    backoff_initial: float = Field(
        1.0, gt=0, description="Seconds before the first retry after a failure."
    )
    backoff_max: float = Field(
        600.0, gt=0, description="Longest wait between two attempts, seconds (doubling up to it)."
    )
    max_attempts: int = Field(
        10, ge=1, description="Failed attempts after which an entry is dead (dead-lettered)."
    )
    max_age: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="Seconds an entry may wait before it is dead, however few its attempts.",
    )
    timeout: float = Field(
        30.0, gt=0, description="Connect, association and DIMSE timeout of a send, seconds."
    )
    idle_interval: float = Field(
        1.0, gt=0, description="Seconds between two looks of an idle destination at its queue."
    )
    stats_interval: float = Field(
        10.0, gt=0, description="Seconds between two readings of the queues for the metrics."
    )
    nodes_refresh: float = Field(
        30.0, gt=0, description="Seconds the node registry is cached (AE groups, addresses)."
    )


class CommitmentSettings(BaseModel):
    """Storage Commitment Push Model SCP (PS3.4 J, docs/storage-commitment.md): the checks
    and the N-EVENT-REPORTs sent to the requestors' registered addresses."""

    group: str = Field(
        "commitment", description="Consumer group of the commitment requests on the event bus."
    )
    max_references: int = Field(
        10_000, ge=1, description="Most instances one N-ACTION may name (more: 0x0213)."
    )
    concurrency: int = Field(
        8, ge=1, description="Requests checked and reported at once by one router process."
    )
    poll_interval: float = Field(0.2, gt=0, description="Seconds between polls when idle.")
    timeout: float = Field(
        30.0, gt=0, description="Connect, association and DIMSE timeout of a report, seconds."
    )
    retry_initial: float = Field(
        5.0, gt=0, description="Seconds before a failed report (or check) is tried again."
    )
    retry_max: float = Field(
        300.0, gt=0, description="Longest wait between two attempts, seconds (doubling up to it)."
    )
    max_age: float = Field(
        3600.0,
        gt=0,
        description="Seconds after the N-ACTION past which an undelivered report is given up.",
    )


class IanSettings(BaseModel):
    """Instance Availability Notifications (PS3.4 R) to the RIS (docs/notifications.md)."""

    destinations: list[str] = Field(
        default_factory=list,
        description="AE titles of registered nodes told of each study's instances by IAN"
        ' N-CREATE, as JSON: ["RIS"]. Empty: no notification is sent.',
    )
    quiet_period: float = Field(
        60.0,
        gt=0,
        description="Seconds without a new instance of a study after which it counts as"
        " complete and its IAN is sent; an instance arriving later sends another, whole.",
    )
    group: str = Field("ian", description="Consumer group on instance.stored and mpps.")
    check_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between two looks for notices due, and at the images completed"
        " performed steps reference.",
    )
    lease: float = Field(
        120.0,
        gt=0,
        description="Seconds a notice being sent stays reserved to its router; one of a"
        " router killed mid-send is sent again after it.",
    )
    backoff_initial: float = Field(
        5.0, gt=0, description="Seconds before the first retry of a refused or failed IAN."
    )
    backoff_max: float = Field(
        600.0, gt=0, description="Longest wait between two attempts, seconds (doubling up to it)."
    )
    max_attempts: int = Field(
        20, ge=1, description="Failed attempts after which a notice is given up (logged)."
    )
    timeout: float = Field(
        30.0, gt=0, description="Connect, association and DIMSE timeout of a send, seconds."
    )

    @field_validator("destinations")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        for title in value:
            if not title.strip() or len(title) > 16 or "\\" in title:
                raise ValueError(f"{title!r} is not an AE title (1-16 characters, no \\)")
        return value


class AtnaSettings(BaseModel):
    """Export of the audit trail to an Audit Record Repository (IHE ATNA, syslog)."""

    host: str = Field(
        "", description="The Audit Record Repository's host; empty: no export (the default)."
    )
    port: int = Field(6514, ge=1, le=65535, description="Its syslog port (6514: syslog over TLS).")
    transport: Literal["tls", "tcp", "udp"] = Field(
        "tls",
        description="tls (RFC 5425), or for test labs tcp (octet counting) or udp (RFC 5426).",
    )
    ca_file: Path | None = Field(
        None, description="CA certificates (PEM) that verify the repository; system CAs if unset."
    )
    cert_file: Path | None = Field(
        None, description="Our client certificate chain (PEM) for the repository, if it asks."
    )
    key_file: Path | None = Field(None, description="The private key of cert_file (PEM).")
    group: str = Field("atna", description="Consumer group of the exporter on the audit topic.")
    audit_source_id: str = Field(
        "", description="AuditSourceID of the messages; the DICOM AE title if empty."
    )
    timeout: float = Field(
        10.0, gt=0, description="Seconds to connect and write one message before a retry."
    )


class ReadBarrierSettings(BaseModel):
    """Read-your-writes: how long a query waits for the index to apply what was acknowledged."""

    timeout: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Most seconds a query, retrieval or worklist read waits for the index to"
        " apply every event acknowledged before it arrived; past it the read is answered"
        " from what the catalog holds (counted and logged). 0 turns the barrier off.",
    )
    fetch_interval: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Least seconds between two readings of the event bus's offsets; the"
        " readings are shared by every request waiting meanwhile.",
    )


class QuerySettings(BaseModel):
    """C-FIND and QIDO-RS behaviour."""

    case_insensitive_pn: bool = Field(
        False,
        description="Match person names ignoring case (PS3.4 C.2.2.2.1 allows it as an option).",
    )
    max_results: int = Field(
        10000, ge=1, description="Most matches one query returns, to protect the server."
    )
    max_examined: int = Field(
        5000,
        ge=0,
        description="Most records one query may read and throw away (candidates left by the"
        " indexed keys that do not match, and matches skipped for an offset); past it the"
        " query is refused: C-FIND 0xA700 Out of Resources, QIDO-RS 413. Bounds the work of"
        " a query on attributes without an index; 0 removes the bound.",
    )


class WorklistSettings(BaseModel):
    """The worklist service: Modality Worklist, MPPS and the HL7 v2 listener."""

    hl7_host: str = Field("127.0.0.1", description="Address the HL7 MLLP listener listens on.")
    hl7_port: int = Field(
        2575, ge=0, le=65535, description="HL7 MLLP port (2575 is IANA's hl7; 0 picks a free one)."
    )
    hl7_max_message_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest HL7 message accepted, bytes; a longer one is refused.",
    )
    hl7_idle_timeout: float = Field(
        300.0, gt=0, description="Seconds an MLLP connection may stay silent before it is closed."
    )
    hl7_allowed_from: list[str] = Field(
        default_factory=list,
        description="Networks (CIDRs, JSON list) that may open MLLP connections, besides"
        ' loopback which always may: ["10.1.2.0/24"]. A connection from elsewhere is closed at'
        " once. Empty with a non-loopback hl7_host: the listener refuses to start, unless"
        ' opened to all with ["0.0.0.0/0", "::/0"].',
    )
    hl7_max_connections: int = Field(
        32,
        ge=1,
        description="Concurrent MLLP connections; one beyond is closed at once.",
    )

    @field_validator("hl7_allowed_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad one
        return value

    api_max_item_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest worklist item POSTed to /api/worklist/items, bytes (else 413).",
    )
    own_station_only: bool = Field(
        False,
        description="A worklist query with no Scheduled Station AE Title sees only the items"
        " scheduled for the calling AE title (else every station's).",
    )
    stations: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Scheduled Station AE Titles of an HL7 order step that names none, by"
        " requested procedure code (OBR-4.1) or else modality (OBR-24, IPC-5), as JSON:"
        ' {"CT": ["CT1", "CT2"], "MR": ["MR1"]}.',
    )
    missing_images_after: float = Field(
        3600.0,
        gt=0,
        description="Seconds after an MPPS COMPLETED with no stored images before it is counted"
        " as a procedure without images (metric and alert).",
    )
    missing_images_window: float = Field(
        7 * 86400.0,
        gt=0,
        description="Seconds back from now that procedures completed are checked for images;"
        " older ones are no longer counted, which bounds the work of each check.",
    )
    missing_images_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds between two checks for procedures completed without images.",
    )

    @field_validator("stations")
    @classmethod
    def _ae_titles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for titles in value.values():
            for title in titles:
                if not title.strip() or len(title) > 16 or "\\" in title:
                    raise ValueError(f"{title!r} is not an AE title (1-16 characters, no \\)")
        return value


class AdminSettings(BaseModel):
    """The admin service: its REST API, send jobs and status page."""

    dicomweb_url: str = Field(
        "",
        description="Base URL of the qr service's DICOMweb (ending in /dicom-web) for the"
        " thumbnails of series; empty: the same origin as the admin API (micropacs serve).",
    )
    service_urls: dict[str, str] = Field(
        default_factory=dict,
        description="For separate deployments: each service's HTTP base URL by name, whose"
        " /healthz and /readyz the status shows; empty: this process's own readiness.",
    )
    max_jobs: int = Field(
        100, ge=1, description="Send jobs kept in memory; the oldest finished ones go first."
    )
    send_timeout: float = Field(
        30.0, gt=0, description="Seconds to connect, associate or wait for a DIMSE answer."
    )
    page_limit: int = Field(
        200, ge=1, description="Most studies, series or instances one page of a listing holds."
    )
    viewer_url: str = Field(
        "",
        description="URL template of a study in a web viewer, with {study_uid} in it (OHIF:"
        " https://viewer/viewer?StudyInstanceUIDs={study_uid}); the web UI's Study page links"
        " to it. Empty: no link.",
    )

    @field_validator("viewer_url")
    @classmethod
    def _viewer_url(cls, value: str) -> str:
        if value and ("{study_uid}" not in value or not value.startswith(("https://", "http://"))):
            raise ValueError("an http(s) URL with {study_uid} in it, or empty")
        return value


class IocmSettings(BaseModel):
    """IHE IOCM rejection notes (docs/iocm.md): when the instances they reject are deleted."""

    delete_rejected_after: float = Field(
        0.0,
        ge=0,
        description="Seconds after its rejection note arrived that a rejected instance is"
        " deleted from the archive (2592000: 30 days); 0 never deletes one: rejected"
        " instances stay hidden, and stored, until an operator deletes their study.",
    )
    delete_interval: float = Field(
        600.0, gt=0, description="Seconds between two looks for rejected instances due."
    )
    delete_batch: int = Field(
        500, ge=1, description="Rejected instances asked for deletion per look, at most."
    )


class RetentionSettings(BaseModel):
    """Retention and tiering of the storage groups (docs/lifecycle.md): the policies, when
    the router runs them, and how moves are made safe."""

    policies_file: Path | None = Field(
        None,
        description="YAML file of the retention and tiering policies; unset: none (nothing"
        " is moved or deleted). Read at start: an invalid file stops the start.",
    )
    scheduled: bool = Field(
        True,
        description="Whether the router runs the policies itself (nightly, and when a"
        " group's free space falls below a policy's threshold); turn it off in all but one"
        " router replica. micropacs retention run works either way.",
    )
    nightly_at: str = Field(
        "02:00",
        pattern=r"^$|^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time (HH:MM) of the nightly run of every policy; empty: none.",
    )
    check_interval: float = Field(
        300.0,
        gt=0,
        description="Seconds between two looks at the groups' free space (and at moved"
        " objects whose grace period ended).",
    )
    grace_period: float = Field(
        3600.0,
        ge=0,
        description="Seconds a moved study's old objects are kept after the catalog"
        " switched to the new ones, so a retrieve that located the old keys still succeeds.",
    )
    concurrency: int = Field(4, ge=1, description="Objects copied at once during a move.")
    verify_checksums: bool = Field(
        True,
        description="Read each copy back and compare its SHA-256 with the one recorded at"
        " store time (where one was) before the catalog switches to it.",
    )
    max_studies: int = Field(
        10_000, ge=1, description="Most studies one policy moves or deletes in one run."
    )
    deletion_wait: float = Field(
        60.0,
        ge=0,
        description="Seconds a run waits for the index to apply the deletions it asked for"
        " (then counts the rest as asked, not done).",
    )


class Settings(BaseSettings):
    """Everything a micropacs process may need; each service reads its part."""

    model_config = SettingsConfigDict(
        env_prefix="MICROPACS_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(Path("data"), description="Root of the embedded stores.")
    site: str = Field("default", description="Site name, recorded in every stored event.")
    issuer_of_patient_id: str = Field(
        "",
        description="Issuer of Patient ID assumed for objects that carry none, so patient IDs"
        " of two sites sharing a catalog never merge.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of log lines written."
    )
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    iocm: IocmSettings = Field(default_factory=IocmSettings)
    atna: AtnaSettings = Field(default_factory=AtnaSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    read_barrier: ReadBarrierSettings = Field(default_factory=ReadBarrierSettings)
    worklist: WorklistSettings = Field(default_factory=WorklistSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    ian: IanSettings = Field(default_factory=IanSettings)
    commitment: CommitmentSettings = Field(default_factory=CommitmentSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @property
    def blob_url(self) -> str:
        """The object store URL, defaulting to files under the data directory."""
        return self.storage.blob_url or f"file://{self.data_dir.resolve() / 'objects'}"

    @property
    def bus_url(self) -> str:
        """The event bus URL, defaulting to a SQLite log under the data directory."""
        return self.storage.bus_url or f"sqlite://{self.data_dir.resolve() / 'events.db'}"

    @property
    def catalog_url(self) -> str:
        """The catalog URL, defaulting to a SQLite database under the data directory."""
        return self.storage.catalog_url or f"sqlite://{self.data_dir.resolve() / 'catalog.db'}"

    @property
    def worklist_url(self) -> str:
        """The worklist store URL: the catalog's MongoDB database, or SQLite in data_dir."""
        if self.storage.worklist_url:
            return self.storage.worklist_url
        if self.catalog_url.startswith("mongodb://"):
            return self.catalog_url
        return f"sqlite://{self.data_dir.resolve() / 'worklist.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, then apply ``overrides`` (CLI flags).

    Overrides use dotted names for nested fields: ``{"dicom.port": 104}``.
    """
    settings = Settings()
    data = settings.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return Settings.model_validate(data)
