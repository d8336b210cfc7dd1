"""The one owner of container names, queue names and blob paths.

Paths are built only from UIDs that :func:`shared.dicom.validate.check_uid` has
accepted (digits and dots, at most 64 characters), so no user value can escape
its folder.
"""

from __future__ import annotations

from typing import Final

INBOX: Final = "dicom-inbox"
ARCHIVE: Final = "dicom-archive"
METADATA: Final = "dicom-metadata"
QUARANTINE: Final = "dicom-quarantine"
CONFIG: Final = "dicomflow-config"
EVENTS_DEADLETTER: Final = "eventgrid-deadletter"

#: Every container the app reads or writes (infra creates exactly these).
CONTAINERS: Final = (INBOX, ARCHIVE, METADATA, QUARANTINE, CONFIG, EVENTS_DEADLETTER)

#: The DIMSE gateway's peers (C-MOVE destinations, Storage Commitment report targets) in :data:`CONFIG`.
GATEWAY_DESTINATIONS: Final = "gateway/destinations.json"
#: Where the gateway writes received C-STORE instances in :data:`INBOX` (then ingest takes over).
GATEWAY_INBOX_PREFIX: Final = "dimse/"

SETTLE_QUEUE: Final = "dicom-settle"
#: Every queue the app uses (poison queues are created by the host on demand).
QUEUES: Final = (SETTLE_QUEUE,)


def instance_path(study: str, series: str, sop: str) -> str:
    """``<study>/<series>/<sop>.dcm`` in :data:`ARCHIVE`."""
    return f"{study}/{series}/{sop}.dcm"


def instance_metadata_path(study: str, series: str, sop: str) -> str:
    """The DICOM JSON sidecar of one instance in :data:`METADATA`."""
    return f"{study}/{series}/{sop}.json"


def series_metadata_path(study: str, series: str) -> str:
    """The precomputed series metadata bundle (a DICOM JSON array) in :data:`METADATA`."""
    return f"{study}/{series}/series.json"


def frame_index_path(study: str, series: str, sop: str) -> str:
    """Byte offsets of each frame of one instance in :data:`METADATA`."""
    return f"{study}/{series}/{sop}.frames.json"


def study_prefix(study: str) -> str:
    return f"{study}/"


def series_prefix(study: str, series: str) -> str:
    return f"{study}/{series}/"


def quarantine_path(inbox_name: str, etag: str) -> str:
    """Quarantine copies keep the inbox name, under a folder per content version."""
    tag = "".join(c for c in etag if c.isalnum())[:32] or "noetag"
    return f"{tag}/{inbox_name}"


def gateway_inbox_path(calling_ae: str, association: str, sop: str) -> str:
    """``dimse/<calling AE>/<association id>/<sop>.dcm`` in :data:`INBOX` (the AE title made path-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in calling_ae.strip()) or "_"
    return f"{GATEWAY_INBOX_PREFIX}{safe}/{association}/{sop}.dcm"
