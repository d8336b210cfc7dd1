"""The one owner of container names, queue names and blob paths.

Paths are built only from UIDs that :func:`shared.dicom.validate.check_uid` has
accepted (digits and dots, at most 64 characters), so no user value can escape
its folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Final

INBOX: Final = "dicom-inbox"
ARCHIVE: Final = "dicom-archive"
METADATA: Final = "dicom-metadata"
QUARANTINE: Final = "dicom-quarantine"
CONFIG: Final = "dicomflow-config"
EVENTS_DEADLETTER: Final = "eventgrid-deadletter"
#: The audit trail: append blobs of audit records (JSON lines), never modified or deleted by the app; in
#: Azure the container has a time-based retention policy that allows appends only (immutable storage).
AUDIT: Final = "dicom-audit"
#: What is costly to compute and read again: transcoded frames and rendered images (WADO-RS), keyed on the
#: archived version's stamp, so a replaced instance never hits an old entry. Deletable at any time (a
#: lifecycle rule does so in Azure); never replicated.
CACHE: Final = "dicom-cache"

#: Every container the app reads or writes, by its logical name (one region on its own uses exactly these).
CONTAINERS: Final = (INBOX, ARCHIVE, METADATA, QUARANTINE, CONFIG, EVENTS_DEADLETTER, AUDIT, CACHE)

#: Containers each region of a pair writes under its own name, ``<name>-<region key>``, and object
#: replication copies to the other region (read-only there): what must survive the loss of a region.
REGIONAL: Final = (ARCHIVE, QUARANTINE, CONFIG)
#: Containers that stay in their region and are never replicated: uploads (each region has its own
#: inbox), everything derived per region (frame indexes, series bundles, large-metadata sidecars: a
#: region derives its own from the archive it holds), dead letters, the audit trail (append blobs, which
#: object replication does not copy: each region keeps the record of what was asked of it) and the cache.
LOCAL: Final = (INBOX, METADATA, EVENTS_DEADLETTER, AUDIT, CACHE)


def is_app_container(name: str) -> bool:
    """One of the app's containers, in any region (``dicom-archive``, ``dicom-archive-secondary``, ...):
    routing may never export into one (it would write the archive, feed the inbox or the config)."""
    return any(name == c or name.startswith(c + "-") for c in CONTAINERS)


def regional(container: str, region: str) -> str:
    """The physical name of regional container ``container`` as region ``region`` writes it
    (``dicom-archive-primary``); with no region key (one region on its own), the name itself."""
    if container not in REGIONAL:
        raise ValueError(f"{container!r} is not a regional container ({', '.join(REGIONAL)})")
    return f"{container}-{region}" if region else container


def region_containers(region: str, peers: Sequence[str] = ()) -> tuple[str, ...]:
    """Every container of one region's data account: the local ones, the regional ones it writes, and
    the replicas of its peers' regional ones (created by infra as replication destinations)."""
    return (*LOCAL, *(regional(c, r) for r in (region, *peers) for c in REGIONAL))

SETTLE_QUEUE: Final = "dicom-settle"
#: The batched ingest path (backfill): one message per chunk of the inbox's batch area (shared/ingest/batch.py).
BATCH_QUEUE: Final = "dicom-ingest-batch"
#: Steps of long-running operations (:mod:`shared.ops`: extended query tag reindexing, bulk update and
#: patient merge): one message per step to run.
OPERATIONS_QUEUE: Final = "dicom-operations"
#: Every queue the app uses (poison queues are created by the host on demand).
QUEUES: Final = (SETTLE_QUEUE, BATCH_QUEUE, OPERATIONS_QUEUE)


def instance_path(study: str, series: str, sop: str) -> str:
    """``<study>/<series>/<sop>.dcm`` in :data:`ARCHIVE`."""
    return f"{study}/{series}/{sop}.dcm"


#: Folders of :data:`ARCHIVE` beside the study folders (UIDs are digits and dots, so no study folder is
#: named like these; listings of a study, ``reindex`` and routing never see them).
ORIGINALS: Final = "original"
REJECTED: Final = "rejected"


def original_path(study: str, series: str, sop: str) -> str:
    """The first version of an instance that a bulk update changed, kept in :data:`ARCHIVE` (retrieved
    with ``msdicom-request-original: true``)."""
    return f"{ORIGINALS}/{study}/{series}/{sop}.dcm"


def originals_prefix(study: str, series: str | None = None) -> str:
    return f"{ORIGINALS}/{study}/{series}/" if series else f"{ORIGINALS}/{study}/"


def rejected_path(study: str, series: str, sop: str) -> str:
    """An instance an IOCM rejection note withdrew, kept in :data:`ARCHIVE` until its retention ends."""
    return f"{REJECTED}/{study}/{series}/{sop}.dcm"


def rejected_original_path(study: str, series: str, sop: str) -> str:
    """The kept original (:func:`original_path`) of a rejected instance."""
    return f"{REJECTED}/{ORIGINALS}/{study}/{series}/{sop}.dcm"


def rejected_prefix(study: str | None = None) -> str:
    return f"{REJECTED}/{study}/" if study else f"{REJECTED}/"


def rejection_report_path(study: str, note_sop: str) -> str:
    """What processing a rejection note found (rejected, already rejected, unknown references), in
    :data:`METADATA` (derived: the note itself is archived)."""
    return f"rejection-notes/{study}/{note_sop}.json"


REJECTION_REPORTS: Final = "rejection-notes/"


def instance_metadata_path(study: str, series: str, sop: str) -> str:
    """The DICOM JSON sidecar of one instance in :data:`METADATA`."""
    return f"{study}/{series}/{sop}.json"


def series_metadata_path(study: str, series: str) -> str:
    """The precomputed series metadata bundle (a DICOM JSON array) in :data:`METADATA`, of a series of at
    least :data:`BUNDLE_MIN_INSTANCES` instances."""
    return f"{study}/{series}/series.json"


#: A series this large gets a metadata bundle (settle writes it; WADO-RS serves it in one read). A smaller
#: series has none: its instance rows, which hold the DICOM JSON, are its metadata in one query (fewer than
#: this many rows: one page), so settle makes no blob write for it (an X-ray or mammography series of 1-10
#: images), and WADO-RS reads one query instead of the pending rows and a blob.
BUNDLE_MIN_INSTANCES: Final = 20


def frame_index_path(study: str, series: str, sop: str) -> str:
    """Byte offsets of each frame of one instance in :data:`METADATA`."""
    return f"{study}/{series}/{sop}.frames.json"


def _version_segment(version: str | None) -> str:
    return "".join(c for c in (version or "") if c.isalnum() or c in "-_.")[:64] or "unversioned"


def transcoded_frame_path(study: str, series: str, sop: str, version: str | None, syntax: str, frame: int) -> str:
    """Frame ``frame`` of one archived version in transfer syntax ``syntax``, in :data:`CACHE`."""
    return f"frames/{study}/{series}/{sop}/{_version_segment(version)}/{syntax}/{frame}"


def rendered_path(study: str, series: str, sop: str, version: str | None, key: str) -> str:
    """A rendered image (``key``: frame, media type and the rendering parameters, made safe), in :data:`CACHE`."""
    return f"rendered/{study}/{series}/{sop}/{_version_segment(version)}/{_safe_segment(key)}"


def study_prefix(study: str) -> str:
    return f"{study}/"


#: In each archive container of a region of a pair: one empty blob per study and hour in which the region
#: archived something of that study, ``.arrivals/<yyyymmddHH>/<study>``, written before the archive copy.
#: They replicate with the archive, so the peer region can find what reached it since a time by listing a
#: few hours of them (``reindex --since``) instead of the whole container. The leading dot keeps them apart
#: from ``<study>/<series>/<sop>.dcm`` (a UID never starts with one) and sorts them first.
ARRIVALS_PREFIX: Final = ".arrivals/"


def arrival_hour(epoch_seconds: float) -> str:
    """The hour (UTC, ``yyyymmddHH``) an arrival mark is filed under."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime("%Y%m%d%H")


def arrival_path(hour: str, study: str) -> str:
    return f"{ARRIVALS_PREFIX}{hour}/{study}"


def arrivals_prefix(hour: str) -> str:
    return f"{ARRIVALS_PREFIX}{hour}/"


def series_prefix(study: str, series: str) -> str:
    return f"{study}/{series}/"


# -- configuration documents (in CONFIG) ----------------------------------------------------

#: The AI model registry (JSON Schema: ``shared/inference/models.schema.json``).
MODELS_DOC: Final = "inference/models.json"
#: The routing rules (JSON Schema: ``shared/routing/rules.schema.json``), the last good copy, and
#: the status of the last read (why a document was rejected).
RULES_DOC: Final = "routing/rules.json"
RULES_LAST_GOOD: Final = "routing/rules.last-good.json"
RULES_STATUS: Final = "routing/rules.status.json"
#: The DIMSE gateway's peers: C-MOVE destinations and Storage Commitment report targets
#: (JSON Schema: ``shared/gateway/destinations.schema.json``).
GATEWAY_DESTINATIONS_DOC: Final = "gateway/destinations.json"


# -- inbox names the app itself writes --------------------------------------------------------

def _safe_segment(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value) or "_"


def ai_result_inbox_path(model: str, sop: str) -> str:
    """Where inference drops a result object in :data:`INBOX` (deterministic: a retry replaces it)."""
    return f"ai/{_safe_segment(model)}/{sop}.dcm"


def gateway_inbox_path(calling_ae: str, association: str, sop: str) -> str:
    """Where the DIMSE gateway drops a received C-STORE instance in :data:`INBOX`."""
    return f"dimse/{_safe_segment(calling_ae.strip())}/{association}/{sop}.dcm"


#: The inbox's batch area: files here are ingested in chunks by the ``ingest_batch`` function, not one by one
#: (the per-file Event Grid subscription leaves this prefix out: infra/events.json).
BATCH_PREFIX: Final = "batch/"


def batch_chunk_prefix(source: str, chunk: str) -> str:
    """The folder of one chunk of the batch area in :data:`INBOX` (``batch/<source>/<chunk>/``)."""
    return f"{BATCH_PREFIX}{_safe_segment(source.strip())}/{chunk}/"


def stow_inbox_path(request_id: str, part: int, sop: str) -> str:
    """Where STOW-RS drops part ``part`` (1-based) of request ``request_id`` in :data:`INBOX`."""
    return f"stow/{request_id}/{part:04d}-{sop}.dcm"


def routing_deadletter_path(study: str, rule: str, destination: str, unit: str) -> str:
    """The record of a delivery that used its attempts, in :data:`EVENTS_DEADLETTER`."""
    return f"routing/{study}/{_safe_segment(rule)}/{_safe_segment(destination)}/{unit}.json"


#: Azure's limit on a blob name (characters).
MAX_BLOB_NAME: Final = 1024


def is_safe_blob_name(name: str) -> bool:
    """A blob name a caller hands in (``/api/ingest/status?blob=``) that can only name a blob of the
    container it is used with: 1-1024 characters, no control characters or backslashes, and no empty,
    ``.`` or ``..`` path segment (clients and the service resolve those in the URL path:
    ``../dicom-archive/x`` in the inbox would read the archive)."""
    if not 0 < len(name) <= MAX_BLOB_NAME or "\\" in name:
        return False
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return False
    return all(segment not in ("", ".", "..") for segment in name.split("/"))


def log_name(inbox_name: str) -> str:
    """How an inbox blob is named in logs and events: ``blob#<12 hex of its SHA-256>``.

    Uploaders choose inbox names, and modalities and scripts often put the patient's name or ID in
    them, so the name itself never goes to a log line or an event. The digest lets an operator follow
    one upload through the logs (``python -m tools`` and the devhost print the same form; the devhost
    computes it itself, ``devhost/host.py`` ``log_name``, pinned equal by a test). It hides names from
    whoever reads logs, not from someone testing guesses: it is a digest, not a secret."""
    return "blob#" + hashlib.sha256(inbox_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def quarantine_folder(etag: str) -> str:
    """The folder of :data:`QUARANTINE` that holds the quarantine copy of one inbox blob version."""
    return "".join(c for c in etag if c.isalnum())[:32] or "noetag"


def quarantine_path(inbox_name: str, etag: str) -> str:
    """Quarantine copies keep the inbox name, under a folder per content version."""
    return f"{quarantine_folder(etag)}/{inbox_name}"


def audit_path(hour: str, writer: str) -> str:
    """One writer's audit blob of one hour (``hour`` is ``YYYY/MM/DD/HH``) in :data:`AUDIT`."""
    return f"{hour}/{_safe_segment(writer)}.jsonl"
