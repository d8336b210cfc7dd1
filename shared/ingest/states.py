"""The ingest vocabulary: the state of one inbox blob, as the ingest log, the status API,
STOW-RS, the DIMSE gateway and the upload CLI report it. One list, used by all of them."""

from __future__ import annotations

import enum
from typing import Final


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
