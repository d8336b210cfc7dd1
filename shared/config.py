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

STORAGE_CONNECTION = "DicomStorage"
#: The Functions host's own account: where the blob trigger's poison queue lives (read by the redrive timer).
HOST_STORAGE_CONNECTION = "AzureWebJobsStorage"
EVENTS_CONNECTION = "DicomEvents"
#: The peer region's data account: only its change feed table is read (Storage Table Data Reader).
PEER_STORAGE_CONNECTION = "DicomPeerStorage"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and the fix."""


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
    #: ``DICOMFLOW_FOLLOW_BATCH``: most peer change-feed entries indexed per follower run.
    follow_batch: int = 500

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
            raw = (env.get(p + name) or "").strip()
            if not raw:
                return default
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise SettingsError(f"Setting {p + name} must be a whole number from {low} to {high}, got {raw!r}")
            return int(raw)

        def words(name: str) -> tuple[str, ...]:
            return tuple(w.strip() for w in (env.get(p + name) or "").split(",") if w.strip())

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
        timeout = (env.get(p + "TIMEOUT_SECONDS") or "").strip()
        wait = (env.get(p + "COMMITMENT_WAIT_SECONDS") or "").strip()
        try:
            timeout_s = float(timeout) if timeout else 30.0
            wait_s = float(wait) if wait else 30.0
        except ValueError:
            raise SettingsError(f"{p}TIMEOUT_SECONDS and {p}COMMITMENT_WAIT_SECONDS are numbers of seconds.") from None
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
            timeout_seconds=timeout_s,
            max_find_results=whole("MAX_FIND_RESULTS", 1000, 1, 100_000),
            commitment_wait_seconds=wait_s,
            max_store_bytes=whole("MAX_STORE_BYTES", 2 * 1024**3, 4096, 1024**4),
            spool_dir=(env.get(p + "SPOOL_DIR") or "").strip() or None,
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
    routing_retry_seconds: float
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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def num(name: str, default: float) -> float:
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

        storage = _storage(env, STORAGE_CONNECTION)
        region, peer = _region_key(env, "DICOMFLOW_REGION"), _region_key(env, "DICOMFLOW_PEER_REGION")
        if peer and not region:
            raise SettingsError("DICOMFLOW_PEER_REGION is set but DICOMFLOW_REGION is not: give this region a key too.")
        if peer and peer == region:
            raise SettingsError(f"DICOMFLOW_PEER_REGION must differ from DICOMFLOW_REGION (both are {region!r}).")
        batch = num("DICOMFLOW_FOLLOW_BATCH", 500)
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
            routing_retry_seconds=num("DICOMFLOW_ROUTING_RETRY_SECONDS", 30.0),
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
            changefeed_horizon_seconds=num("DICOMFLOW_CHANGEFEED_HORIZON_SECONDS", 2.0),
            routing_rules_ttl_seconds=num("DICOMFLOW_ROUTING_RULES_TTL_SECONDS", 15.0),
            gateway=GatewaySettings.from_env(env),
            region=RegionSettings(key=region, peer=peer, peer_storage=_storage(env, PEER_STORAGE_CONNECTION),
                                  follow_batch=max(1, int(batch))),
            inference_factories=_factories(env.get("DICOMFLOW_INFERENCE_FACTORIES")),
            routing_tls_ca=(env.get("DICOMFLOW_ROUTING_TLS_CA") or "").strip() or None,
            routing_tls_client_cert=(env.get("DICOMFLOW_ROUTING_TLS_CLIENT_CERT") or "").strip() or None,
            host_storage=_storage(env, HOST_STORAGE_CONNECTION),
            inbox_retention_days=num("DICOMFLOW_INBOX_RETENTION_DAYS", 7.0),
            extended_tags_ttl_seconds=num("DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS", 60.0),
            extended_tags_grace_seconds=num("DICOMFLOW_EXTENDED_TAGS_WRITE_GRACE_SECONDS", 60.0),
            audit=AuditSettings(
                flush_seconds=num("DICOMFLOW_AUDIT_FLUSH_SECONDS", 1.0) or 1.0,
                batch=max(1, int(num("DICOMFLOW_AUDIT_BATCH", 500))),
                spool_dir=(env.get("DICOMFLOW_AUDIT_SPOOL_DIR") or "").strip() or None,
                patient_salt=env.get("DICOMFLOW_AUDIT_PATIENT_SALT") or "",
            ),
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
