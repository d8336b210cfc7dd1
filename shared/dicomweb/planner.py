"""From a parsed QIDO query to the index planner's :class:`~shared.index.query.Criteria`.

Only values that narrow the search are handed over (a single value, a UID list, a
wildcard with a literal prefix, a date range); the planner returns candidates and
:mod:`shared.dicomweb.matching` applies the exact rules to each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.dicomweb.qido import Match, MatchKind, QidoQuery
from shared.dicomweb.search import Fetch
from shared.index.query import Criteria, plan_and_fetch
from shared.index.store import IndexStore


def criteria_of(query: QidoQuery) -> Criteria:
    c = Criteria(wanted=query.offset + query.limit + 1)
    for m in query.matches:
        kw = m.attribute.keyword
        if kw == "StudyInstanceUID" and m.kind in (MatchKind.SINGLE, MatchKind.LIST):
            c.study_uids = _intersect(c.study_uids, m.values)
        elif kw == "SeriesInstanceUID" and m.kind in (MatchKind.SINGLE, MatchKind.LIST):
            c.series_uids = _intersect(c.series_uids, m.values)
        elif kw == "SOPInstanceUID" and m.kind in (MatchKind.SINGLE, MatchKind.LIST):
            c.sop_uids = _intersect(c.sop_uids, m.values)
        elif kw == "PatientID":
            c.patient_id = _text(m)
        elif kw == "AccessionNumber":
            c.accession_number = _text(m)
        elif kw == "PatientName":
            c.patient_name = _text(m)
        elif kw in ("Modality", "ModalitiesInStudy") and m.kind is MatchKind.SINGLE:
            c.modality = m.values[0].strip()
        elif kw == "StudyDate":
            if m.kind is MatchKind.SINGLE:
                c.study_date = (m.values[0], m.values[0])
            elif m.kind is MatchKind.RANGE:
                c.study_date = (m.low, m.high)
    return c


def _text(m: Match) -> str | None:
    if m.kind in (MatchKind.SINGLE, MatchKind.WILDCARD):
        return m.values[0].strip()
    return None


def _intersect(current: list[str] | None, values: Iterable[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    if current is None:
        return vals
    return [v for v in current if v in vals]


def fetch_for(store: IndexStore) -> Fetch:
    """A ``search.Fetch`` over an :class:`~shared.index.store.IndexStore`."""

    def fetch(query: QidoQuery) -> tuple[str, Iterable[Any]]:
        plan, candidates = plan_and_fetch(store, query.level.value, criteria_of(query))
        return str(plan), candidates

    return fetch
