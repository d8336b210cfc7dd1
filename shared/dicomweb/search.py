"""QIDO-RS search: the index planner proposes candidates, PS3.4 matching decides.

``shared.index.query.plan_and_fetch`` picks the most selective lookup (never a full
scan for a supported key) and returns CANDIDATE records of the requested level;
:func:`shared.dicomweb.matching.matches` keeps the exact matches; ``offset`` and
``limit`` page through them. The plan is named in the ``X-Dicomflow-Plan`` response
header (and the log line), e.g. ``lookup:PatientID``.

When more matches exist than ``limit``, the response carries the PS3.18 8.3.4.5
warning ``299 <host> "The number of results exceeded the maximum supported by the
server. Additional results can be requested."``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from shared.audit import scope as audit_scope
from shared.dicomweb.attributes import ATTRIBUTES, UID_KEYWORD, Level
from shared.dicomweb.matching import matches
from shared.dicomweb.qido import QidoQuery
from shared.dicomweb.qido_json import DICOM_JSON, render
from shared.dicomweb.reply import Reply

log = logging.getLogger(__name__)

PLAN_HEADER = "X-Dicomflow-Plan"
#: fetch(query) -> (plan description, candidate records of query.level)
Fetch = Callable[[QidoQuery], tuple[str, Iterable[Any]]]


def view_of(record: Any) -> dict[str, Any]:
    """A record (index dataclass, or a mapping keyed by DICOM keyword) as {keyword: value}."""
    if isinstance(record, dict):
        return record
    view: dict[str, Any] = {}
    if is_dataclass(record):
        for keyword, name in _pairs_of(record.__class__):
            view[keyword] = getattr(record, name)
        ts = getattr(record, "transfer_syntax_uid", None)
        if ts:
            view["AvailableTransferSyntaxUID"] = ts
        ext = getattr(record, "extended", None)
        if ext:
            view[_EXTENDED] = ext
    return view


#: Where a view keeps its record's extended query tag values (not a DICOM keyword: never matched or returned).
_EXTENDED = "~extended"


@functools.lru_cache(maxsize=16)
def _pairs_of(cls: Any) -> tuple[tuple[str, str], ...]:
    """(keyword, field) of every attribute a record class holds."""
    names = {f.name for f in fields(cls)}
    return tuple((a.keyword, a.field) for a in ATTRIBUTES if a.field in names)


@dataclass(frozen=True, slots=True)
class Found:
    """The outcome of :func:`find`: the plan used, the page of matches, and whether more exist."""

    plan: str
    views: list[dict[str, Any]]
    examined: int
    more: bool


def find(query: QidoQuery, fetch: Fetch) -> Found:
    """Plan, fetch candidates, keep exact matches, apply offset and limit.

    The one search both QIDO-RS (:func:`search`, HTTP) and the DIMSE gateway's C-FIND use:
    the same planner, the same PS3.4 matching, the same de-duplication.
    """
    plan, candidates = fetch(query)
    uid_key = UID_KEYWORD[query.level]
    seen: set[Any] = set()
    page: list[dict[str, Any]] = []
    matched = 0
    examined = 0
    more = False
    extended = query.extended
    for view in _views(candidates):
        examined += 1
        if extended:  # extended query tags: their values, by keyword, from the record's extended field
            held = view.get(_EXTENDED) or {}
            for a in extended:
                view[a.keyword] = held.get(a.key)
        if not matches(query, view):
            continue
        uid = view.get(uid_key)
        if uid in seen:
            continue  # lookup rows may name an entity twice (e.g. two matching name tokens)
        seen.add(uid)
        matched += 1
        if matched <= query.offset:
            continue
        if len(page) == query.limit:
            more = True
            break
        page.append(view)
    return Found(plan, page, examined, more)


def search(query: QidoQuery, fetch: Fetch, base_url: str, *, host: str = "dicomflow",
           media_type: str = DICOM_JSON) -> Reply:
    found = find(query, fetch)
    page, more = found.views, found.more
    audit_scope.note_query(m.attribute.keyword for m in query.matches)
    audit_scope.note_views(page)
    log.info("QIDO %s: plan %s, %d candidates examined, %d returned%s", query.level, found.plan, found.examined,
             len(page), " (more available)" if more else "")
    headers = {"Content-Type": media_type, PLAN_HEADER: found.plan}
    if more:
        headers["Warning"] = (
            f'299 {host} "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        )
    return Reply(200, headers, render(page, query, base_url))


def _views(candidates: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for rec in candidates:
        yield view_of(rec)


def level_from_path(study: str | None, series: str | None, target: str) -> tuple[Level, dict[str, str]]:
    """Level and path scope of a QIDO URL (``/studies/{s}/series`` -> SERIES, {StudyInstanceUID: s})."""
    scope: dict[str, str] = {}
    if study:
        scope["StudyInstanceUID"] = study
    if series:
        scope["SeriesInstanceUID"] = series
    return Level(target), scope
