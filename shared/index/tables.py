"""Table names (Azure tables: letters and digits only, case-insensitive)."""

from __future__ import annotations

from typing import Final

INSTANCES: Final = "dicominstances"
SERIES: Final = "dicomseries"
STUDIES: Final = "dicomstudies"
LOOKUP: Final = "dicomlookup"
#: Series and SOP Instance UID lookups: point reads only, kept out of LOOKUP (which QIDO queries
#: by partition ranges) so LOOKUP stays a few rows per study.
UID_LOOKUP: Final = "dicomuidlookup"
PENDING: Final = "dicompending"
CHANGEFEED: Final = "dicomchangefeed"
DELIVERIES: Final = "dicomdeliveries"
#: Progress of work that walks another source: the peer change-feed follower's cursor and the
#: entries whose file has not been replicated yet, ``reindex``'s position per container.
SYNC: Final = "dicomsync"
#: Extended query tags (PK ``tag``, RK the tag path) and their indexing errors (PK ``err~<path>``).
EXTENDED_TAGS: Final = "dicomextendedtags"
#: Long-running operations (extended query tag reindexing, bulk update): one row per operation.
OPERATIONS: Final = "dicomoperations"

#: Every table the app uses (infra creates exactly these).
TABLES: Final = (INSTANCES, SERIES, STUDIES, LOOKUP, UID_LOOKUP, PENDING, CHANGEFEED, DELIVERIES, SYNC,
                  EXTENDED_TAGS, OPERATIONS)
