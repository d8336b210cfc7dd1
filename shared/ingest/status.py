""""Did my file get in?": the ingest log, per blob and in summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.ingest.context import Context
from shared.storage import layout

RECENT_FAILURES = 20


def blob_status(ctx: Context, blob: str) -> dict[str, Any]:
    """One inbox blob: its recorded outcome, ``pending`` while it waits in the inbox,
    ``unknown`` if there is neither."""
    entry = ctx.index.get_log(blob)
    if entry is not None:
        return {"blob": blob, "state": entry.state, "reason": entry.reason, "message": entry.message,
                "study": entry.study, "series": entry.series, "sop": entry.sop, "updatedAt": entry.at}
    try:
        ctx.clients.blob.get_blob_client(layout.INBOX, blob).get_blob_properties()
        state = "pending"
    except ResourceNotFoundError:
        state = "unknown"
    return {"blob": blob, "state": state, "reason": None, "message": None, "study": None, "series": None,
            "sop": None, "updatedAt": None}


def summary(ctx: Context) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failures = []
    for entry in ctx.index.scan_log():
        counts[str(entry.state)] += 1  # plain str keys: orjson refuses str subclasses as keys
        if entry.reason:
            failures.append({"blob": entry.blob, "reason": entry.reason, "message": entry.message, "at": entry.at})
    failures.sort(key=lambda f: f["at"] or "", reverse=True)
    return {"counts": dict(sorted(counts.items())), "recentFailures": failures[:RECENT_FAILURES]}
