"""Patient merge: every study of one Patient ID moved under another, as bulk updates over those studies.

The studies of the source patient are found from the PatientID lookup rows (and series not settled
yet), then changed in operations of at most 50 studies each (:mod:`shared.update.service`), with the
same guarantees: a new version of each instance, the first version kept, ``update`` in the change feed
and ``Dicom.ImageUpdated``, resumable, one operation per study at a time. The change sets the target's
Patient ID and, when the archive already holds studies of the target patient, the target's name,
birth date and sex as its newest study has them (the merged studies then read as the surviving
patient's); ``demographics`` given by the caller take precedence.

Reached by ``POST /api/dicomweb/patients/$merge`` (admin) and ``python -m tools merge``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.actions import ActionRecord, completed
from shared.index.query import Criteria, plan_and_fetch
from shared.index.records import StudyRecord
from shared.ops.store import Operation
from shared.services import Services
from shared.update.changes import ChangeRefused, ChangeSet, parse_changes
from shared.update.locks import StudyLocks
from shared.update.service import MAX_STUDIES, UpdateRefused, submit

log = logging.getLogger(__name__)

#: The target patient's attributes copied onto the merged studies: keyword -> (tag, VR, index field).
DEMOGRAPHICS: Final = {"PatientName": ("00100010", "PN", "patient_name"),
                       "PatientBirthDate": ("00100030", "DA", "patient_birth_date"),
                       "PatientSex": ("00100040", "CS", "patient_sex")}


@dataclass(slots=True)
class MergePlan:
    source: str
    target: str
    studies: list[str]
    change: dict[str, Any]
    #: The target patient's studies found (0: only the Patient ID changes, unless demographics were given).
    target_studies: int = 0
    batches: list[list[str]] = field(default_factory=list)


def _studies(svc: Services, patient_id: str) -> list[StudyRecord]:
    _, candidates = plan_and_fetch(svc.index, "study", Criteria(patient_id=patient_id))
    seen: dict[str, StudyRecord] = {}
    for rec in candidates:
        if rec.patient_id == patient_id and rec.study_instance_uid not in seen:
            seen[rec.study_instance_uid] = rec
    return list(seen.values())


def _value(vr: str, value: str) -> Any:
    """A DICOM JSON value; a person name as its groups (the index keeps ``Alpha=Ideo=Phon``)."""
    if vr != "PN":
        return value
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
    return {k: v for k, v in groups.items() if v}


def _check_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value or any(
            ord(c) < 0x20 for c in value):
        raise UpdateRefused(400, f"{name} must be a Patient ID (1-64 characters, no backslash or control "
                                 "characters).")
    return value


def plan(svc: Services, source: Any, target: Any, demographics: Mapping[str, Any] | None = None) -> MergePlan:
    """What a merge of ``source`` into ``target`` would change (400 for bad IDs, 404 when the source has no
    study). Reads only the index."""
    source, target = _check_id(source, "sourcePatientId"), _check_id(target, "targetPatientId")
    if source == target:
        raise UpdateRefused(400, "sourcePatientId and targetPatientId are the same patient.")
    studies = sorted(_studies(svc, source), key=lambda r: r.study_instance_uid)
    if not studies:
        raise UpdateRefused(404, "The archive holds no study of the source patient: nothing to merge.")
    change: dict[str, Any] = {"00100020": {"vr": "LO", "Value": [target]}}
    kept = sorted(_studies(svc, target), key=lambda r: (r.updated_at or "", r.study_date or ""))
    if kept:
        newest = kept[-1]
        for tag, vr, field_name in DEMOGRAPHICS.values():
            value = getattr(newest, field_name)
            if value:
                change[tag] = {"vr": vr, "Value": [_value(vr, value)]}
    for name, value in (demographics or {}).items():
        if name not in DEMOGRAPHICS:
            raise UpdateRefused(400, f"{name!r} cannot be given for a merge; use {', '.join(DEMOGRAPHICS)}.")
        tag, vr, _ = DEMOGRAPHICS[name]
        change[tag] = {"vr": vr, "Value": [_value(vr, str(value))]}
    uids = [r.study_instance_uid for r in studies]
    return MergePlan(source, target, uids, change, len(kept),
                     [uids[i:i + MAX_STUDIES] for i in range(0, len(uids), MAX_STUDIES)])


def changes_of(merge: MergePlan) -> ChangeSet:
    try:
        return parse_changes(merge.change)
    except ChangeRefused as refused:
        raise UpdateRefused(400, str(refused)) from None


def merge(svc: Services, source: Any, target: Any, *, actor: str,
          demographics: Mapping[str, Any] | None = None) -> tuple[MergePlan, list[Operation]]:
    """Plan the merge, then submit its operations (409 before any is submitted if a study is held)."""
    merged = plan(svc, source, target, demographics)
    changes = changes_of(merged)
    held = StudyLocks(svc.tables).held(merged.studies)
    if held:
        study, holder = held[0].study, held[0].operation
        raise UpdateRefused(409, f"Study {study} is already being updated by operation {holder}; merge again once "
                                 f"GET operations/{holder} says it has ended.")
    ops = [submit(svc, batch, changes, actor=actor) for batch in merged.batches]
    completed(svc.settings, ActionRecord("merge", "success", actor, count=len(merged.studies),
                                         operation=",".join(o.id for o in ops), patients=(merged.source, merged.target),
                                         detail=f"{len(merged.studies)} studies, source patient into target patient"))
    log.info("Merge: %d studies in %d operation(s): %s", len(merged.studies), len(ops), ", ".join(o.id for o in ops))
    return merged, ops
