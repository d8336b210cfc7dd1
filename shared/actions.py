"""Where a change of patient data made by an administrative action reports that it completed.

Bulk update (per study), patient merge, IOCM rejection (per note) and the purge of rejected files each call
:func:`completed` exactly once per unit of work, after its outcome is known, with who asked, what was done,
the outcome and the UIDs concerned. It writes one audit record (:mod:`shared.audit`, DICOM PS3.15 A.5 /
IHE ATNA): DICOM Instances Accessed (110103) with action U (update, merge) or D (rejection, purge), the
requestor, the study and its instances, the patient only as a digest; appended in the background (no
storage request here). Like every audit record it is also one log line (``audit {...}``, logger
``dicomflow.audit``): the action has no second line of its own.

The HTTP request that started an action has its own record (``functions/access.py``); these records say
what the work did when it finished, in the worker that did it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from shared import audit
from shared.audit.record import (
    DELETE,
    INSTANCES_ACCESSED,
    MAJOR_FAILURE,
    MINOR_FAILURE,
    REJECTION,
    SUCCESS,
    UPDATE,
    UPDATE_ACTION,
    Actor,
    Subjects,
)
from shared.config import Settings

#: action -> (EventActionCode, EventTypeCode) of its audit record.
_EVENTS: Final = {"update": (UPDATE_ACTION, UPDATE), "merge": (UPDATE_ACTION, UPDATE),
                  "reject": (DELETE, REJECTION), "purge": (DELETE, REJECTION)}
_OUTCOMES: Final = {"success": SUCCESS, "partial": MINOR_FAILURE, "failure": MAJOR_FAILURE}


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One completed action. ``outcome``: ``success``, ``partial`` (some instances failed: ``detail`` says
    why) or ``failure``."""

    #: ``update`` (bulk update of a study), ``merge`` (a patient merge submitted), ``reject`` (a rejection
    #: note applied), ``purge`` (rejected files removed at the end of their retention).
    action: str
    outcome: str
    #: Who asked: a token subject (object id), ``note:<SOP Instance UID>`` for a rejection note (its sender
    #: is in the store's own record), ``system`` for timers, ``cli:<user>`` for the tools.
    actor: str
    study: str | None = None
    #: The instances concerned, as (series, SOP Instance UID) pairs of ``study``.
    instances: Sequence[tuple[str, str]] = ()
    #: How many instances the action changed.
    count: int = 0
    #: The operation (bulk update, merge) this belongs to.
    operation: str | None = None
    #: Patient IDs the action concerns: recorded only as digests (salted, :mod:`shared.audit`), never logged.
    patients: Sequence[str] = ()
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def completed(settings: Settings, record: ActionRecord) -> None:
    """Report one completed action (see the module docstring)."""
    salt = settings.audit.patient_salt
    action, kind = _EVENTS[record.action]
    subjects = Subjects()
    subjects.add(record.study)
    for series, sop in record.instances:
        subjects.add(record.study, series, sop)
    for p in record.patients:
        subjects.add_patient(p, salt)
    parts = [f"{record.action} {record.outcome}", f"{record.count} instance(s)"]
    if record.operation:
        parts.append(f"operation {record.operation}")
    if record.detail:
        parts.append(record.detail)
    audit.emit(settings, audit.new_record(settings, INSTANCES_ACCESSED, action, outcome=_OUTCOMES[record.outcome],
                                          requestor=Actor(record.actor or "unknown"), subjects=subjects,
                                          types=(kind,), description="; ".join(parts)))
