"""The ingest vocabulary: the state of one inbox blob, as ingest, the status API,
STOW-RS, the DIMSE gateway and the upload CLI report it. One list, used by all of them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final


class IngestState(enum.StrEnum):
    #: In the inbox; no outcome recorded yet.
    PENDING = "pending"
    #: A new instance: archived, indexed, announced (``Dicom.ImageCreated``).
    ARCHIVED = "archived"
    #: The same SOP Instance UID with new content: replaced (``Dicom.ImageUpdated``).
    UPDATED = "updated"
    #: Identical to the stored instance: nothing changed, nothing announced.
    DUPLICATE = "duplicate"
    #: Refused with a reason code: copied to the quarantine, ``Dicom.IngestFailed``.
    QUARANTINED = "quarantined"
    #: The inbox blob vanished or was replaced while it was read, and no outcome was recorded
    #: (the newer upload has its own event).
    GONE = "gone"
    #: The status API knows neither the blob nor an outcome for it.
    UNKNOWN = "unknown"
    #: Indexing an archived file (the peer region's replica, ``reindex``): an older version of an
    #: instance whose newer version is indexed. It stays in the archive; nothing is written.
    SUPERSEDED = "superseded"
    #: Indexing an archived file: it cannot be read as DICOM now (reason code); it stays where it is.
    REFUSED = "refused"


#: States in which the instance is stored and retrievable (STOW-RS answers "stored").
STORED: Final = frozenset({IngestState.ARCHIVED, IngestState.UPDATED, IngestState.DUPLICATE})
#: States that end an upload's story (the upload CLI stops waiting).
FINAL: Final = STORED | {IngestState.QUARANTINED}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one inbox blob: what ingest returns, and what the status API, STOW-RS and the
    DIMSE gateway report. ``bytes_read``/``requests``: the header read's cost (ingest only)."""

    blob: str
    state: IngestState
    study: str | None = None
    series: str | None = None
    sop: str | None = None
    reason: str | None = None
    message: str | None = None
    updated_at: str | None = None
    bytes_read: int = 0
    requests: int = 0

    def to_json(self) -> dict[str, Any]:
        """The status API's body (``GET /api/ingest/status?blob=``)."""
        reason = None if self.reason is None else str(self.reason)
        return {"blob": self.blob, "state": str(self.state), "reason": reason, "message": self.message,
                "study": self.study, "series": self.series, "sop": self.sop, "updatedAt": self.updated_at}
