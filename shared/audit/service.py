"""``GET /api/audit`` (admin role) and ``python -m tools audit``: the records of a window, by study, actor, patient.

``patient=<Patient ID>`` finds records that name the patient's digest (searches, stores, DIMSE) and records of
any study the index holds for that patient (retrievals name studies, not patients).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from shared.audit import scope, writer
from shared.audit.query import AuditQuery, AuditQueryError, Found, search
from shared.dicomweb.attributes import Level
from shared.dicomweb.planner import fetch_for
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import find
from shared.services import Services

log = logging.getLogger(__name__)
#: Studies of one patient looked up for ``patient=`` (a patient with more is asked by study).
PATIENT_STUDIES = 1000


def run(svc: Services, params: Mapping[str, str]) -> tuple[AuditQuery, Found]:
    """The query of ``params`` and what it found; :class:`AuditQueryError` for a bad query."""
    query = AuditQuery.parse(params, salt=svc.settings.audit.patient_salt)
    patient = (params.get("patient") or "").strip()
    if patient:
        if any(c in patient for c in "*?\\") or len(patient) > 64:
            raise AuditQueryError("patient must be one Patient ID, without wildcards.")
        qido = parse_query([("PatientID", patient), ("limit", str(PATIENT_STUDIES))], Level.STUDY)
        studies = frozenset(str(v["StudyInstanceUID"]) for v in find(qido, fetch_for(svc.index)).views)
        query = dataclasses.replace(query, patient_studies=studies)
    scope.note_resource(f"audit?{'study' if query.study else 'window'}")
    if query.study:
        scope.note(query.study)
    try:  # what this process has not appended yet is part of the answer too (the caller's own requests)
        writer(svc.settings).flush()
    except Exception:  # any append failure: the records stay spooled for the writer to retry; the query goes on
        log.warning("Audit: pending records could not be appended before the query", exc_info=True)
    return query, search(svc.blobs, query)


def answer(svc: Services, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        query, found = run(svc, params)
    except AuditQueryError as bad:
        return 400, {"error": str(bad)}
    return 200, {"query": query.to_json(), "count": len(found.records), "more": found.more,
                 "records": found.records}
