"""Where a change of patient data made by an administrative action is reported complete: the seam the
audit trail hooks into.

Bulk update (per study), patient merge, IOCM rejection (per note) and the purge of rejected files each
call :func:`completed` exactly once per unit of work, after its outcome is known, with who asked,
what was done, the outcome and the UIDs concerned. Today it writes one log line (logger
``shared.actions``; identifiers only, never patient data: a patient ID is passed only as a digest).
The audit trail (PS3.15 A.5 / IHE ATNA records) is written from here too, so every caller is covered
by one change.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One completed action. ``outcome``: ``success``, ``partial`` (some instances failed: ``detail``
    says why) or ``failure``."""

    #: ``update`` (bulk update of a study), ``merge`` (a patient merge submitted), ``reject`` (a rejection
    #: note applied), ``purge`` (rejected files removed at the end of their retention).
    action: str
    outcome: str
    #: Who asked: a token subject (object id), ``note:<SOP Instance UID>`` for a rejection note (its
    #: sender is in the ingest log), ``system`` for timers, ``cli:<user>`` for the tools.
    actor: str
    study: str | None = None
    series: Sequence[str] = ()
    sops: Sequence[str] = ()
    #: How many instances the action changed.
    count: int = 0
    #: The operation (bulk update, merge) this belongs to.
    operation: str | None = None
    #: A SHA-256 prefix of a patient ID the action concerns (never the ID itself).
    patient_digest: str | None = None
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def patient_digest(patient_id: str) -> str:
    """How a patient ID may appear in a record: a digest, never the value."""
    return hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:16]


def completed(record: ActionRecord) -> None:
    """Report one completed action (see the module docstring)."""
    log.info("action=%s outcome=%s actor=%s study=%s count=%d operation=%s patient=%s%s", record.action,
             record.outcome, record.actor or "-", record.study or "-", record.count, record.operation or "-",
             record.patient_digest or "-", f" detail={record.detail}" if record.detail else "")
