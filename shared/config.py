"""Typed settings, read once from the environment.

This module is the only reader of ``os.environ`` in ``shared/`` and ``functions/``.
Connections follow the Azure Functions conventions so that the same names work for
bindings and for our own SDK clients:

* ``DicomStorage``: a connection string (Azurite only), or identity-based
  ``DicomStorage__blobServiceUri`` / ``__queueServiceUri`` / ``__tableServiceUri``
  with an optional ``DicomStorage__clientId`` (user-assigned managed identity).
* ``DicomEvents__topicEndpointUri``: the custom Event Grid topic. In Azure it is
  reached with the managed identity; locally the devhost's event fabric takes the
  key in ``DICOMFLOW_EVENTS_LOCAL_KEY``.
* ``DICOMFLOW_AUTH_*`` and ``DICOMFLOW_CORS_ORIGINS``: who may call the HTTP API (bearer tokens
  from an OpenID issuer: Entra ID in Azure, the devhost's development issuer locally) and which
  browser origins may (see :class:`AuthSettings`).
* ``DICOMFLOW_REGION``, ``DICOMFLOW_PEER_REGION`` and ``DicomPeerStorage``: two regions that serve each
  other's archive (see :class:`RegionSettings`); unset, the app is one region on its own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.rejection.codes import DEFAULT_RETENTION_DAYS, RejectionCode

STORAGE_CONNECTION = "DicomStorage"
#: The Functions host's own account: where the blob trigger's poison queue lives (read by the redrive timer).
HOST_STORAGE_CONNECTION = "AzureWebJobsStorage"
EVENTS_CONNECTION = "DicomEvents"
#: The peer region's data account: only its change feed table is read (Storage Table Data Reader).
PEER_STORAGE_CONNECTION = "DicomPeerStorage"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and the fix."""


#: How App Service hands over an app setting whose Key Vault reference it could not resolve: the reference's
#: own text. Taken as a value it would be a guessable audit salt or, worse, an accepted Functions key.
_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


def _refuse_unresolved_references(env: Mapping[str, str]) -> None:
    """Fail closed on a Key Vault reference that did not resolve (named by setting, never by value)."""
    unresolved = sorted(k for k, v in env.items() if k.startswith(("DICOMFLOW_", "DicomStorage", "DicomEvents",
                                                                   "DicomPeerStorage"))
                        and v.lstrip().startswith(_KEY_VAULT_REFERENCE))
    if unresolved:
        raise SettingsError(
            f"{', '.join(unresolved)}: the Key Vault reference did not resolve (the app got the reference's text). "
            "Give the app's identity Key Vault Secrets User on the secret, let the vault's firewall admit the app's "
            "network, then restart the app.")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class RegionSettings:
    """Which region this app is, and which region it serves as the other half of a pair.

    Each region writes its own archive, quarantine and configuration containers, named with its key
    (``dicom-archive-<key>``, :func:`shared.storage.layout.regional`), and Azure object replication
    copies them to the peer, where they are read-only. A region indexes what reaches it from the
    peer by following the peer's change feed (read from the peer's table endpoint with this app's
    identity). Keys are short names fixed at deployment (``primary``/``secondary`` in infra/), not
    roles: after a failover the "secondary" keeps writing ``-secondary`` containers.
    """

    #: ``DICOMFLOW_REGION``: this region's key (lowercase letters and digits, 1-20). Empty: one region,
    #: container names without a suffix.
    key: str = ""
    #: ``DICOMFLOW_PEER_REGION``: the other region's key (its containers are replicated here).
    peer: str = ""
    #: ``DicomPeerStorage`` (Azurite connection string) or ``DicomPeerStorage__tableServiceUri`` (+
    #: ``__clientId``): where the peer's change feed is read. Unset: the peer's feed is not followed
    #: (``python -m tools reindex`` still indexes what replication brought).
    peer_storage: StorageSettings = StorageSettings()
    #: ``DICOMFLOW_FOLLOW_BATCH``: most peer change-feed entries read per follower step (one read of the
    #: feed, then indexed in parallel); a run takes steps until it has caught up or its time is up.
    follow_batch: int = 500
    #: ``DICOMFLOW_FOLLOW_WORKERS``: instances the follower indexes at once (threads; each waits on storage).
    follow_workers: int = 16
    #: ``DICOMFLOW_FOLLOW_RUN_SECONDS``: how long one follower run keeps taking steps before it saves its
    #: place and ends (the timer starts the next one).
    follow_run_seconds: float = 30.0
    #: ``DICOMFLOW_FAILBACK_MAX_LAG_SECONDS``: the failback gate. Above 0, ``GET /api/health`` answers 503
    #: ``catching up`` while this region's follower is behind its (reachable) peer by more than this, so Front
    #: Door sends nothing here until the region has indexed what the peer wrote meanwhile. Set it on the
    #: region Front Door prefers (priority 1); 0 (the default) turns the gate off.
    failback_max_lag_seconds: float = 0.0

    @property
    def paired(self) -> bool:
        return bool(self.key and self.peer)

    @property
    def follows_peer(self) -> bool:
        p = self.peer_storage
        return self.paired and bool(p.connection_string or p.table_service_uri)


def _region_key(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "").strip()
    if raw and not (len(raw) <= 20 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in raw)):
        raise SettingsError(f"Setting {name} must be 1-20 lowercase letters and digits (it becomes part of "
                            f"container names, as in dicom-archive-primary), got {raw!r}")
    return raw


def _storage(env: Mapping[str, str], conn: str) -> StorageSettings:
    prefix = conn + "__"
    return StorageSettings(
        connection_string=env.get(conn) or None,
        blob_service_uri=env.get(prefix + "blobServiceUri") or env.get(prefix + "serviceUri"),
        queue_service_uri=env.get(prefix + "queueServiceUri"),
        table_service_uri=env.get(prefix + "tableServiceUri"),
        client_id=env.get(prefix + "clientId"),
    )


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Bearer-token validation and CORS for the HTTP API (``shared.auth``).

    Locally only ``issuer`` and ``audiences`` differ from Azure: the devhost's development issuer
    (``{devhost:issuer}``) instead of ``https://login.microsoftonline.com/<tenant>/v2.0``.
    """

    #: ``DICOMFLOW_AUTH_ISSUER``: the exact ``iss`` of accepted tokens; its OpenID discovery
    #: document names the JWKS. Unset: every protected request is refused (fail closed).
    issuer: str | None = None
    #: ``DICOMFLOW_AUTH_AUDIENCE``: accepted ``aud`` values, comma-separated (Entra: the API's
    #: application ID URI and/or client id).
    audiences: tuple[str, ...] = ()
    #: ``DICOMFLOW_AUTH_JWKS_URI``: skip discovery and read signing keys from here.
    jwks_uri: str | None = None
    #: ``DICOMFLOW_AUTH_FUNCTION_KEYS``: keys machine clients may send as ``x-functions-key``
    #: instead of a token (comma-separated; empty = tokens only). In Azure, a Key Vault reference.
    function_keys: tuple[str, ...] = ()
    #: ``DICOMFLOW_CORS_ORIGINS``: browser origins allowed to call the API (``*`` = any).
    cors_origins: tuple[str, ...] = ()
    #: ``DICOMFLOW_AUTH_LEEWAY_SECONDS``: clock skew tolerated on exp/nbf.
    leeway_seconds: float = 60.0
    #: ``DICOMFLOW_AUTH_JWKS_CACHE_SECONDS``: how long signing keys are trusted without refetching.
    jwks_cache_seconds: float = 3600.0
    #: ``DICOMFLOW_AUTH_JWKS_COOLDOWN_SECONDS``: at most one refetch per this many seconds when a
    #: token names an unknown key (rotation), so forged ``kid`` values cannot hammer the issuer.
    jwks_cooldown_seconds: float = 30.0
    #: ``DICOMFLOW_AUTH_JWKS_MAX_STALE_SECONDS``: while the issuer is unreachable, the last good signing keys
    #: keep validating for this long past their cache lifetime (then 503 until the issuer answers).
    jwks_max_stale_seconds: float = 86400.0

    @property
    def configured(self) -> bool:
        return bool(self.issuer and self.audiences)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The DIMSE gateway (``python -m gateway``): who may talk to it and its limits.

    Empty allow-lists mean "anyone who reaches the port", so the gateway listens beyond loopback
    only with a calling AE allow-list or mutual TLS (:meth:`exposure_problem`; it refuses to start
    otherwise). TLS is on when a certificate is given; then plain TCP is refused. With a CA file,
    clients must also present a certificate signed by it (mutual TLS).
    """

    ae_title: str = "DICOMFLOW"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_ae_titles: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ()
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    max_associations: int = 16
    max_pdu_bytes: int = 262_144
    timeout_seconds: float = 30.0
    #: C-FIND answers at most this many matches; more ends the query with a "narrow it" failure.
    max_find_results: int = 1000
    #: Storage Commitment: how long to wait for instances still being ingested before reporting them failed.
    commitment_wait_seconds: float = 30.0
    #: C-STORE sub-operations of a C-MOVE issued by one of these AE titles (``tools migrate`` calls a PACS as
    #: the gateway's own AE title by default) take the batched ingest path (shared/ingest/batch.py).
    batch_originators: tuple[str, ...] = ("DICOMFLOW",)
    #: C-STORE: the largest data set received; a larger one aborts its association (gateway/spool.py).
    max_store_bytes: int = 2 * 1024**3
    #: C-STORE: the folder received data sets wait in (the gateway's own; emptied at start and stop).
    #: Empty: ``<system temp>/dicomflow-gateway-<port>``.
    spool_dir: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def mutual_tls(self) -> bool:
        return bool(self.tls_cert_file and self.tls_ca_file)

    @property
    def loopback(self) -> bool:
        """Listening on this machine only (127.0.0.0/8, ::1 or ``localhost``)."""
        import ipaddress

        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to any interface

    def exposure_problem(self) -> str | None:
        """Why the gateway must not listen as configured, or None. Beyond loopback it needs a calling
        AE allow-list or mutual TLS: with neither, anyone who reaches the port could store, find and
        retrieve."""
        if self.loopback or self.allowed_ae_titles or self.mutual_tls:
            return None
        p = "DICOMFLOW_GATEWAY_"
        return (f"Refusing to listen on {self.host}:{self.port} open to anyone: beyond loopback the gateway needs "
                f"{p}ALLOWED_AE_TITLES (the calling AE titles of your modalities and PACS) or mutual TLS "
                f"({p}TLS_CERT_FILE + {p}TLS_KEY_FILE + {p}TLS_CA_FILE, the CA that signs client certificates); "
                f"add {p}ALLOWED_NETWORKS too. To listen on this machine only, set {p}HOST=127.0.0.1.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        p = "DICOMFLOW_GATEWAY_"

        def whole(name: str, default: int, low: int, high: int) -> int:
            return _whole(env, p + name, default, low, high)

        def words(name: str) -> tuple[str, ...]:
            return _csv(env.get(p + name))

        ae = (env.get(p + "AE_TITLE") or "DICOMFLOW").strip()
        for title in (ae, *words("ALLOWED_AE_TITLES")):
            if not 1 <= len(title) <= 16 or "\\" in title or not title.isascii() or not title.isprintable():
                raise SettingsError(
                    f"AE title {title!r} in {p}AE_TITLE/{p}ALLOWED_AE_TITLES must be 1-16 printable ASCII "
                    "characters without a backslash."
                )
        networks = words("ALLOWED_NETWORKS")
        import ipaddress

        for net in networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise SettingsError(
                    f"Setting {p}ALLOWED_NETWORKS: {net!r} is not an address or network (e.g. 10.0.0.0/8)."
                ) from None
        cert, key, ca = (env.get(p + n) or None for n in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE"))
        if (key or ca) and not cert:
            raise SettingsError(f"{p}TLS_KEY_FILE/{p}TLS_CA_FILE need {p}TLS_CERT_FILE (the server certificate).")
        return cls(
            ae_title=ae,
            host=(env.get(p + "HOST") or "127.0.0.1").strip(),
            port=whole("PORT", 11112, 1, 65535),
            allowed_ae_titles=words("ALLOWED_AE_TITLES"),
            allowed_networks=networks,
            tls_cert_file=cert,
            tls_key_file=key,
            tls_ca_file=ca,
            max_associations=whole("MAX_ASSOCIATIONS", 16, 1, 1000),
            max_pdu_bytes=whole("MAX_PDU_BYTES", 262_144, 4096, 16 * 1024 * 1024),
            timeout_seconds=_seconds(env, p + "TIMEOUT_SECONDS", 30.0),
            max_find_results=whole("MAX_FIND_RESULTS", 1000, 1, 100_000),
            commitment_wait_seconds=_seconds(env, p + "COMMITMENT_WAIT_SECONDS", 30.0),
            batch_originators=(() if (env.get(p + "BATCH_ORIGINATORS") or "").strip().lower() == "none"
                               else tuple(dict.fromkeys((ae, *words("BATCH_ORIGINATORS"))))),
            max_store_bytes=whole("MAX_STORE_BYTES", 2 * 1024**3, 4096, 1024**4),
            spool_dir=(env.get(p + "SPOOL_DIR") or "").strip() or None,
        )


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """What one DICOM header read may cost, whatever the file declares (``shared.dicom.bounds``).

    Every entry point parses headers through :func:`shared.dicom.header.read_header` (inbox ingest,
    STOW-RS parts, the gateway's C-STORE, the peer follower and reindex, WADO-RS frame indexes), so these
    hold for all of them. A header over a limit is refused as ``header-too-large``.
    """

    #: ``DICOMFLOW_HEADER_MAX_BYTES``: value bytes a parse reads into memory (values over 64 KiB are
    #: skipped while parsing and read later only if the DICOM JSON needs them: sequences, text).
    max_bytes: int = 32 * MIB
    #: ``DICOMFLOW_HEADER_MAX_ELEMENTS``: data elements and sequence items (counted as the 8-byte headers
    #: read, delimiters included) the parse and the DICOM JSON may turn into objects (~1 KiB each).
    max_elements: int = 100_000
    #: ``DICOMFLOW_HEADER_MAX_INFLATED_BYTES``: a deflated data set may inflate this far before its pixel
    #: data (skipping a deflated value means inflating it: this bounds the time, memory stays ~1 MiB).
    max_inflated_bytes: int = 64 * MIB
    #: ``DICOMFLOW_HEADER_MAX_DEPTH``: sequences nested deeper than this are refused.
    max_depth: int = 32


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Budgets for untrusted input (README "Limits"): files, STOW-RS requests, queries, status and health."""

    header: HeaderLimits = HeaderLimits()
    #: ``DICOMFLOW_MAX_FRAMES``: most frames (and encapsulated fragments) a frame index holds.
    max_frames: int = 200_000
    #: ``DICOMFLOW_STOW_MAX_PARTS``: most parts in one STOW-RS request (more: 413).
    stow_max_parts: int = 1000
    #: ``DICOMFLOW_QUERY_MAX_WILDCARDS``: most ``*``/``?`` in one QIDO/C-FIND value (more: 400).
    query_max_wildcards: int = 10
    #: ``DICOMFLOW_QUERY_MAX_ROWS``: most index rows one QIDO request or C-FIND examines (more: 413 / A700).
    query_max_rows: int = 20_000
    #: ``DICOMFLOW_STATUS_MAX_ITEMS``: most change-feed entries and quarantined files the ingest status
    #: summary looks at (the counts say when they stopped short).
    status_max_items: int = 10_000
    #: ``DICOMFLOW_HEALTH_CACHE_SECONDS``: the anonymous health probe answers from one storage call
    #: made at most this often per worker.
    health_cache_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LimitSettings:
        def whole(name: str, default: int, low: int = 1, high: int = 2**40) -> int:
            return _whole(env, name, default, low, high)

        d, base = HeaderLimits(), cls()
        return cls(
            header=HeaderLimits(
                max_bytes=whole("DICOMFLOW_HEADER_MAX_BYTES", d.max_bytes, 1 * MIB),
                max_elements=whole("DICOMFLOW_HEADER_MAX_ELEMENTS", d.max_elements, 1000),
                max_inflated_bytes=whole("DICOMFLOW_HEADER_MAX_INFLATED_BYTES", d.max_inflated_bytes, 1 * MIB),
                max_depth=whole("DICOMFLOW_HEADER_MAX_DEPTH", d.max_depth, 2, 200),
            ),
            max_frames=whole("DICOMFLOW_MAX_FRAMES", base.max_frames, 1),
            stow_max_parts=whole("DICOMFLOW_STOW_MAX_PARTS", base.stow_max_parts, 1),
            query_max_wildcards=whole("DICOMFLOW_QUERY_MAX_WILDCARDS", base.query_max_wildcards, 1, 256),
            query_max_rows=whole("DICOMFLOW_QUERY_MAX_ROWS", base.query_max_rows, 10),
            status_max_items=whole("DICOMFLOW_STATUS_MAX_ITEMS", base.status_max_items, 10),
            health_cache_seconds=_seconds(env, "DICOMFLOW_HEALTH_CACHE_SECONDS", base.health_cache_seconds),
        )


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """The audit trail (:mod:`shared.audit`): where records are spooled and how often they are flushed."""

    #: ``DICOMFLOW_AUDIT_FLUSH_SECONDS``: a record reaches the audit container within this time (background).
    flush_seconds: float = 1.0
    #: ``DICOMFLOW_AUDIT_BATCH``: a flush starts early once this many records wait.
    batch: int = 500
    #: ``DICOMFLOW_AUDIT_SPOOL_DIR``: local folder where each record is written before it is flushed (what a
    #: killed process did not flush, the next process on the machine sends). Default: the temp folder.
    spool_dir: str | None = None
    #: ``DICOMFLOW_AUDIT_PATIENT_SALT``: mixed into the patient ID digests (a Key Vault reference in Azure), so a
    #: digest cannot be matched to an ID by someone who only guesses IDs. Unset: unsalted SHA-256.
    patient_salt: str = ""


#: The environment variables through which ``requests`` (the Azure SDK's transport) takes a proxy.
PROXY_ENVIRONMENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True, slots=True)
class Settings:
    storage: StorageSettings
    events_endpoint: str | None
    events_local_key: str | None
    events_client_id: str | None
    stable_age_seconds: float
    settle_delay_seconds: float
    service_host_name: str
    partition_name: str
    #: STOW-RS: largest request body accepted (the Functions HTTP limit is 100 MB); larger -> 413.
    stow_max_bytes: int = 100 * 1024 * 1024
    #: STOW-RS: how long a request waits for ingestion of its parts before answering 202.
    stow_wait_seconds: float = 10.0
    auth: AuthSettings = AuthSettings()
    #: Change feed entries younger than this are held back, so the order a reader sees never changes.
    changefeed_horizon_seconds: float = 2.0
    #: Routing reads its rules document at most this often per worker (a new document applies after it).
    routing_rules_ttl_seconds: float = 15.0
    gateway: GatewaySettings = GatewaySettings()
    region: RegionSettings = RegionSettings()
    #: The batched ingest path (backfill): how long a chunk of the inbox's batch area takes new files; its
    #: ingest runs a few seconds after it closes (shared/ingest/batch.py).
    batch_window_seconds: float = 5.0
    #: Budgets for untrusted input (``DICOMFLOW_HEADER_*``, ``DICOMFLOW_STOW_MAX_PARTS``, ``DICOMFLOW_QUERY_*`` ...).
    limits: LimitSettings = LimitSettings()
    #: ``DICOMFLOW_INFERENCE_FACTORIES``: the ``module:callable`` model factories a ``python`` entry of the
    #: model registry may name (comma-separated), besides those installed packages publish as entry points
    #: (group ``dicomflow.models``). Whoever writes the config container chooses among them; nothing else
    #: is imported (shared/inference/registry.py).
    inference_factories: tuple[str, ...] = ()
    #: ``DICOMFLOW_ROUTING_TLS_CA``: CA certificates (PEM text, e.g. a Key Vault reference, or a file's path)
    #: trusted for routing destinations besides the system's: C-STORE with ``"tls": true`` and STOW-RS.
    routing_tls_ca: str | None = None
    #: ``DICOMFLOW_ROUTING_TLS_CLIENT_CERT``: the app's client certificate and private key (one PEM, text or
    #: path) for destinations that ask for one. Destination credentials live here, never in rules.json.
    routing_tls_client_cert: str | None = None
    #: ``AzureWebJobsStorage`` (connection string, Azurite) or ``AzureWebJobsStorage__queueServiceUri`` (+
    #: ``__clientId``): the host's account, whose ``webjobs-blobtrigger-poison`` queue the redrive timer reads.
    host_storage: StorageSettings = StorageSettings()
    #: ``DICOMFLOW_INBOX_RETENTION_DAYS``: an inbox blob whose outcome is recorded is removed after this many
    #: days (shared/ingest/retention.py); one without an outcome is never removed (it is ingested again).
    inbox_retention_days: float = 7.0
    #: Extended query tags: how old the tag list a process indexes and matches with may be.
    extended_tags_ttl_seconds: float = 60.0
    #: Extended query tags: the longest time from reading the tag list to the instance row it is used for
    #: (the reindex of a new tag waits ``ttl + grace`` so no write made with an older list comes later).
    extended_tags_grace_seconds: float = 60.0
    audit: AuditSettings = AuditSettings()
    #: ``DICOMFLOW_OPERATIONS_LEASE_SECONDS``: how long a runner holds a long-running operation (a step works at
    #: most half of it); after a crash the operation resumes once the hold has run out.
    operations_lease_seconds: float = 120.0
    #: ``DICOMFLOW_REJECTION_RETENTION_DAYS`` (``113001=30,113037=30,113038=30``): how many days the files an
    #: IOCM rejection note withdrew are kept, per rejection code; 113039 is always 0 (removed at once).
    rejection_retention_days: tuple[tuple[str, float], ...] = tuple(
        (str(c), d) for c, d in DEFAULT_RETENTION_DAYS.items())
    #: Whether the environment names an HTTP proxy (any of :data:`PROXY_ENVIRONMENT`). Then the storage clients
    #: read the environment for every request, as ``requests`` does by default (a proxy applies per URL, with
    #: ``NO_PROXY``); without one they skip that scan of the environment, about 10% of the host's CPU per
    #: request here (measured with cProfile on the request-budget mixes).
    http_proxy: bool = True
    #: ``REQUESTS_CA_BUNDLE`` (else ``CURL_CA_BUNDLE``): the CA certificates the storage clients verify TLS
    #: with when they do not read the environment per request (as ``requests`` would take them from it).
    http_ca_bundle: str | None = None

    def retention_days(self, code: str) -> float:
        """Days a file rejected with ``code`` is kept (0: removed at once)."""
        return dict(self.rejection_retention_days).get(code, DEFAULT_RETENTION_DAYS[RejectionCode.QUALITY])

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def num(name: str, default: float) -> float:
            return _seconds(env, name, default)

        _refuse_unresolved_references(env)

        storage = _storage(env, STORAGE_CONNECTION)
        region, peer = _region_key(env, "DICOMFLOW_REGION"), _region_key(env, "DICOMFLOW_PEER_REGION")
        if peer and not region:
            raise SettingsError("DICOMFLOW_PEER_REGION is set but DICOMFLOW_REGION is not: give this region a key too.")
        if peer and peer == region:
            raise SettingsError(f"DICOMFLOW_PEER_REGION must differ from DICOMFLOW_REGION (both are {region!r}).")
        batch = num("DICOMFLOW_FOLLOW_BATCH", 500)
        workers = num("DICOMFLOW_FOLLOW_WORKERS", 16)
        if not 1 <= workers <= 64:
            raise SettingsError(f"Setting DICOMFLOW_FOLLOW_WORKERS must be from 1 to 64, got {workers:g}")
        stable_age = num("DICOMFLOW_STABLE_AGE_SECONDS", 60.0)
        return cls(
            storage=storage,
            events_endpoint=env.get(EVENTS_CONNECTION + "__topicEndpointUri") or None,
            events_local_key=env.get("DICOMFLOW_EVENTS_LOCAL_KEY") or None,
            events_client_id=env.get(EVENTS_CONNECTION + "__clientId") or None,
            stable_age_seconds=stable_age,
            settle_delay_seconds=num("DICOMFLOW_SETTLE_DELAY_SECONDS", min(5.0, stable_age)),
            service_host_name=env.get("DICOMFLOW_SERVICE_HOST_NAME") or env.get("WEBSITE_HOSTNAME") or "localhost",
            partition_name=env.get("DICOMFLOW_PARTITION_NAME") or "Microsoft.Default",
            stow_max_bytes=int(num("DICOMFLOW_STOW_MAX_BYTES", 100 * 1024 * 1024)),
            stow_wait_seconds=num("DICOMFLOW_STOW_WAIT_SECONDS", 10.0),
            auth=AuthSettings(
                issuer=(env.get("DICOMFLOW_AUTH_ISSUER") or "").strip() or None,
                audiences=_csv(env.get("DICOMFLOW_AUTH_AUDIENCE")),
                jwks_uri=(env.get("DICOMFLOW_AUTH_JWKS_URI") or "").strip() or None,
                function_keys=_csv(env.get("DICOMFLOW_AUTH_FUNCTION_KEYS")),
                cors_origins=tuple(o.rstrip("/") for o in _csv(env.get("DICOMFLOW_CORS_ORIGINS"))),
                leeway_seconds=num("DICOMFLOW_AUTH_LEEWAY_SECONDS", 60.0),
                jwks_cache_seconds=num("DICOMFLOW_AUTH_JWKS_CACHE_SECONDS", 3600.0) or 3600.0,
                jwks_cooldown_seconds=num("DICOMFLOW_AUTH_JWKS_COOLDOWN_SECONDS", 30.0),
                jwks_max_stale_seconds=num("DICOMFLOW_AUTH_JWKS_MAX_STALE_SECONDS", 86400.0),
            ),
            http_proxy=any(env.get(name) for name in PROXY_ENVIRONMENT),
            http_ca_bundle=env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None,
            changefeed_horizon_seconds=num("DICOMFLOW_CHANGEFEED_HORIZON_SECONDS", 2.0),
            routing_rules_ttl_seconds=num("DICOMFLOW_ROUTING_RULES_TTL_SECONDS", 15.0),
            gateway=GatewaySettings.from_env(env),
            region=RegionSettings(key=region, peer=peer, peer_storage=_storage(env, PEER_STORAGE_CONNECTION),
                                  follow_batch=max(1, int(batch)), follow_workers=int(workers),
                                  follow_run_seconds=num("DICOMFLOW_FOLLOW_RUN_SECONDS", 30.0),
                                  failback_max_lag_seconds=num("DICOMFLOW_FAILBACK_MAX_LAG_SECONDS", 0.0)),
            batch_window_seconds=num("DICOMFLOW_BATCH_WINDOW_SECONDS", 5.0),
            limits=LimitSettings.from_env(env),
            inference_factories=_factories(env.get("DICOMFLOW_INFERENCE_FACTORIES")),
            routing_tls_ca=(env.get("DICOMFLOW_ROUTING_TLS_CA") or "").strip() or None,
            routing_tls_client_cert=(env.get("DICOMFLOW_ROUTING_TLS_CLIENT_CERT") or "").strip() or None,
            host_storage=_storage(env, HOST_STORAGE_CONNECTION),
            inbox_retention_days=num("DICOMFLOW_INBOX_RETENTION_DAYS", 7.0),
            operations_lease_seconds=num("DICOMFLOW_OPERATIONS_LEASE_SECONDS", 120.0) or 120.0,
            extended_tags_ttl_seconds=num("DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS", 60.0),
            extended_tags_grace_seconds=num("DICOMFLOW_EXTENDED_TAGS_WRITE_GRACE_SECONDS", 60.0),
            audit=AuditSettings(
                flush_seconds=num("DICOMFLOW_AUDIT_FLUSH_SECONDS", 1.0) or 1.0,
                batch=max(1, int(num("DICOMFLOW_AUDIT_BATCH", 500))),
                spool_dir=(env.get("DICOMFLOW_AUDIT_SPOOL_DIR") or "").strip() or None,
                patient_salt=env.get("DICOMFLOW_AUDIT_PATIENT_SALT") or "",
            ),
            rejection_retention_days=_retention(env.get("DICOMFLOW_REJECTION_RETENTION_DAYS")),
        )

    def require_storage(self) -> StorageSettings:
        s = self.storage
        if not s.connection_string and not s.blob_service_uri:
            raise SettingsError(
                f"No storage configured: set {STORAGE_CONNECTION} (Azurite connection string) or "
                f"{STORAGE_CONNECTION}__blobServiceUri/__queueServiceUri/__tableServiceUri (managed identity)."
            )
        return s


def _factories(raw: str | None) -> tuple[str, ...]:
    import re

    names = _csv(raw)
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name):
            raise SettingsError(f"Setting DICOMFLOW_INFERENCE_FACTORIES: {name!r} is not a factory; list "
                                "module:callable names, comma-separated (e.g. hospital_models.lung:create).")
    return names


def _retention(raw: str | None) -> tuple[tuple[str, float], ...]:
    """``code=days`` pairs over the defaults; 113039 stays 0 whatever is given."""
    name = "DICOMFLOW_REJECTION_RETENTION_DAYS"
    days = {str(c): d for c, d in DEFAULT_RETENTION_DAYS.items()}
    for item in _csv(raw):
        code, sep, value = item.partition("=")
        code = code.strip()
        if not sep or code not in days:
            raise SettingsError(f"Setting {name} is a list of code=days pairs with codes from "
                                f"{', '.join(days)} (e.g. 113001=30,113037=90), got {item!r}")
        try:
            n = float(value)
        except ValueError:
            raise SettingsError(f"Setting {name}: days for {code} must be a number, got {value!r}") from None
        if n < 0:
            raise SettingsError(f"Setting {name}: days for {code} must not be negative, got {value!r}")
        if code == RejectionCode.RETENTION_EXPIRED and n != 0:
            raise SettingsError(f"Setting {name}: 113039 (Data Retention Policy Expired) is removed at once; "
                                "leave it out or give 0.")
        days[code] = n
    return tuple(days.items())


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A number setting (seconds, or a count given as a number) that may not be negative."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"Setting {name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"Setting {name} must not be negative, got {raw!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number setting from ``low`` to ``high`` (ASCII digits only)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise SettingsError(f"Setting {name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (raw or "").split(",") if v.strip())


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    return Settings.from_env(os.environ)


def reload_settings() -> Settings:
    """Forget cached settings (tests and the devhost call this after changing the environment)."""
    get_settings.cache_clear()
    return get_settings()
