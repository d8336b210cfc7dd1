"""The query planner: pick the most selective key for a QIDO query, return candidates.

Candidates are a superset of the matches; exact PS3.4 matching (wildcards, ranges,
person-name rules) is applied by :mod:`shared.dicomweb` on each candidate, lazily,
so ``limit`` stops the fetching early. Every supported key is answered from lookup
rows or partition keys: only a query with no supported key scans (and says so).

Read-your-writes: lookup rows are written when a study settles; until its series are stable
they also have pending rows (written before their first instance row), and every plan adds
the pending series to its candidates. So what ingest has archived is found at once, at every
level; only aggregates (counts, ModalitiesInStudy) wait for the settle step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from shared.index import keys
from shared.index.records import InstanceRecord, SeriesRecord, StudyRecord, from_entity, study_part
from shared.index.store import READS, IndexStore
from shared.ports import Row

LevelName = Literal["study", "series", "instance"]
_WILD = re.compile(r"[*?]")
Record = StudyRecord  # every record class derives from StudyRecord


@dataclass(slots=True)
class Criteria:
    """The keys the planner can use. Values are raw QIDO values (may hold ``*``/``?``)."""

    study_uids: list[str] | None = None
    series_uids: list[str] | None = None
    sop_uids: list[str] | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    patient_name: str | None = None
    modality: str | None = None
    #: Inclusive YYYYMMDD bounds; either may be None (open range).
    study_date: tuple[str | None, str | None] | None = None
    #: How many matches the caller takes at most (offset + limit + 1): a scan reads pages of that
    #: size, so a first page of a plain listing costs ~limit rows, not the service's 1,000.
    wanted: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str  # "key", "lookup", "scan"
    key: str  # the attribute used, or the table scanned

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


def _literal_prefix(value: str) -> tuple[str, bool]:
    """The part before the first wildcard, and whether the value had wildcards."""
    m = _WILD.search(value)
    return (value[:m.start()], True) if m else (value, False)


def _usable(value: str | None) -> bool:
    """A value whose literal prefix narrows the search (``*`` alone matches everything)."""
    if not value:
        return False
    prefix, _ = _literal_prefix(value)
    return bool(prefix)


def _dedupe(items: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


def choose(level: LevelName, c: Criteria) -> Plan:
    """The plan for a query (pure: the same criteria always give the same plan)."""
    if c.study_uids:
        return Plan("key", "StudyInstanceUID")
    if c.series_uids and level != "study":
        return Plan("lookup", "SeriesInstanceUID")
    if c.sop_uids and level == "instance":
        return Plan("lookup", "SOPInstanceUID")
    if _usable(c.patient_id):
        return Plan("lookup", "PatientID")
    if _usable(c.accession_number):
        return Plan("lookup", "AccessionNumber")
    if c.modality and not _WILD.search(c.modality):
        return Plan("lookup", "Modality")
    if c.study_date and (c.study_date[0] or c.study_date[1]):
        return Plan("lookup", "StudyDate")
    if c.patient_name and keys.name_tokens(_literal_prefix(c.patient_name)[0].split("^")[0]):
        return Plan("lookup", "PatientName")
    return Plan("scan", {"study": "studies", "series": "series", "instance": "instances"}[level])


def plan_and_fetch(store: IndexStore, level: LevelName, c: Criteria) -> tuple[Plan, Iterator[Record]]:
    """The plan and a lazy iterator of candidate records at ``level``."""
    plan = choose(level, c)
    return plan, _fetch(store, level, c, plan)


Pair = tuple[str, str | None]  # (study, series or None)
#: A lookup hit: (study, series or None, the lookup row). Study lookup rows carry the study's
#: fields (settle writes them), so a study-level hit needs no second read.
Hit = tuple[str, str | None, Row | None]


def _fetch(store: IndexStore, level: LevelName, c: Criteria, plan: Plan) -> Iterator[Record]:
    if plan.key == "StudyInstanceUID":
        yield from _by_study(store, level, list(_dedupe(c.study_uids or [])))
        return
    # What arrived and is not settled yet: the pending series that the plan's key selects, read
    # while the plan's own query runs (the answer waits for the slower of the two, not both).
    pending = READS.submit(store.list_pending, _pending_filter(c, plan))
    if plan.kind == "scan":
        yield from _scan(store, level, c.wanted)
    elif plan.key == "SOPInstanceUID":
        yield from _sop_candidates(store, c.sop_uids or [])
    else:
        yield from _expand(store, level, _dedupe_hits(_hits(store, level, c, plan)))
    yield from _pending(store, level, c, plan, pending.result())


def _hits(store: IndexStore, level: LevelName, c: Criteria, plan: Plan) -> Iterator[Hit]:
    def studies(kind: str, value: str, *, prefix: bool = False) -> Iterator[Hit]:
        literal, wild = _literal_prefix(value)
        ranges = keys.value_lookup_ranges(kind, literal, prefix=prefix or wild)
        if len(ranges) == 1:
            rows: Iterable[Row] = store.lookup(pk=ranges[0][0], rk_range=ranges[0][1])
        else:  # a prefix of a value spread over every partition of its kind: asked side by side
            rows = (r for part in READS.map(lambda pr: list(store.lookup(pk=pr[0], rk_range=pr[1])), ranges)
                    for r in part)
        return ((keys.study_of_value_row(str(r["RowKey"])), None, r) for r in rows)

    if plan.key == "SeriesInstanceUID":
        for uid in _dedupe(c.series_uids or []):
            for r in store.find_by_uid(keys.Lookup.SERIES, uid):
                yield str(r["study"]), uid, None
    elif plan.key == "PatientID":
        yield from studies(keys.Lookup.PATIENT_ID, c.patient_id or "")
    elif plan.key == "AccessionNumber":
        yield from studies(keys.Lookup.ACCESSION, c.accession_number or "")
    elif plan.key == "Modality":
        pk = keys.lookup_pk(keys.Lookup.MODALITY, (c.modality or "").upper())
        dates = c.study_date
        rk = keys.modality_date_range(*dates) if dates and (dates[0] or dates[1]) else None
        for r in store.lookup(pk=pk, rk_range=rk):
            yield str(r["study"]), (str(r["series"]) if level != "study" else None), r
    elif plan.key == "StudyDate":
        lo, hi = c.study_date or (None, None)
        yield from ((str(r["RowKey"]), None, r) for r in store.lookup(pk_range=keys.date_range(lo, hi)))
    else:  # PatientName
        token = sorted(keys.name_tokens(_literal_prefix(c.patient_name or "")[0].split("^")[0]))[0]
        yield from studies(keys.Lookup.NAME, token, prefix=True)


def _dedupe_hits(hits: Iterable[Hit]) -> Iterator[Hit]:
    seen: set[Pair] = set()
    for study, series, row in hits:
        if (study, series) not in seen:
            seen.add((study, series))
            yield study, series, row


def _sop_candidates(store: IndexStore, uids: list[str]) -> Iterator[InstanceRecord]:
    for uid in _dedupe(uids):
        for r in store.find_by_uid(keys.Lookup.SOP, uid):
            got = store.get_instance(str(r["study"]), str(r["series"]), uid)
            if got is not None:
                yield got.record


def _study_record(store: IndexStore, study: str) -> StudyRecord | None:
    """The settled study row, else (not settled yet) one made from a pending series or an instance."""
    rec = store.get_study(study)
    if rec is not None:
        return rec
    pending = store.pending_series(study)
    if pending:
        return StudyRecord(**study_part(pending[0]))
    rows = store.list_study_instances(study)
    return StudyRecord(**study_part(rows[0])) if rows else None


def _study_series(store: IndexStore, study: str) -> list[SeriesRecord]:
    """Settled series rows, plus the study's pending series not settled yet."""
    settled = store.list_series(study)
    known = {s.series_instance_uid for s in settled}
    return settled + [p for p in store.pending_series(study) if p.series_instance_uid not in known]


def _by_study(store: IndexStore, level: LevelName, studies: list[str]) -> Iterator[Record]:
    for study in studies:
        if level == "study":
            rec = _study_record(store, study)
            if rec is not None:
                yield rec
        elif level == "series":
            yield from _study_series(store, study)
        else:
            yield from store.list_study_instances(study)


def _from_lookup(row: Row | None) -> StudyRecord | None:
    """The study record a study lookup row carries (None for a row written without it)."""
    if row is None or not row.get("study_instance_uid"):
        return None
    return from_entity(StudyRecord, row)


def _expand(store: IndexStore, level: LevelName, hits: Iterable[Hit]) -> Iterator[Record]:
    for study, series, row in hits:
        if level == "study":
            rec = _from_lookup(row) or _study_record(store, study)
            if rec is not None:
                yield rec
        elif level == "series":
            if series is not None:
                se = store.get_series(study, series)
                if se is not None:
                    yield se
            else:
                yield from _study_series(store, study)
        elif series is not None:
            yield from store.list_series_instances(study, series)
        else:
            yield from store.list_study_instances(study)


def _selected(rec: SeriesRecord, c: Criteria, plan: Plan) -> bool:
    """Whether a pending series has the value the plan's lookup would have found it by (the
    same test its lookup row stands for; exact matching follows for every candidate)."""
    def like(value: str | None, pattern: str | None) -> bool:
        prefix, wild = _literal_prefix(pattern or "")
        return bool(value) and (str(value).startswith(prefix) if wild else value == pattern)

    if plan.kind == "scan":
        return True
    key = plan.key
    if key == "SeriesInstanceUID":
        return rec.series_instance_uid in (c.series_uids or [])
    if key == "SOPInstanceUID":
        return True  # its instances are looked at one by one
    if key == "PatientID":
        return like(rec.patient_id, c.patient_id)
    if key == "AccessionNumber":
        return like(rec.accession_number, c.accession_number)
    lo, hi = c.study_date or (None, None)
    in_dates = (not lo or (rec.study_date or "") >= lo) and (not hi or (rec.study_date or "~") <= hi)
    if key == "Modality":
        return (rec.modality or "").upper() == (c.modality or "").upper() and (c.study_date is None or in_dates)
    if key == "StudyDate":
        return bool(rec.study_date) and in_dates
    token = sorted(keys.name_tokens(_literal_prefix(c.patient_name or "")[0].split("^")[0]))[0]
    return any(t.startswith(token) for t in keys.name_tokens(rec.patient_name or ""))


def _pending_filter(c: Criteria, plan: Plan) -> dict[str, str] | None:
    """The plan's key as an equality the table service can apply, when it is one."""
    def exact(value: str | None) -> str | None:
        return value if value and not _WILD.search(value) else None

    if plan.key == "PatientID" and exact(c.patient_id):
        return {"patient_id": str(c.patient_id)}
    if plan.key == "AccessionNumber" and exact(c.accession_number):
        return {"accession_number": str(c.accession_number)}
    if plan.key == "Modality" and c.modality:
        return {"modality": c.modality.upper()}
    return None


def _pending(store: IndexStore, level: LevelName, c: Criteria, plan: Plan,
             unsettled: list[SeriesRecord]) -> Iterator[Record]:
    pending = [p for p in unsettled if _selected(p, c, plan)]
    if level == "study":
        seen: set[str] = set()
        for p in pending:
            if p.study_instance_uid not in seen:
                seen.add(p.study_instance_uid)
                yield StudyRecord(**study_part(p))
    elif level == "series":
        yield from pending
    else:
        wanted = set(c.sop_uids or []) if plan.key == "SOPInstanceUID" else None
        for p in pending:
            for inst in store.list_series_instances(p.study_instance_uid, p.series_instance_uid):
                if wanted is None or inst.sop_instance_uid in wanted:
                    yield inst


def _scan(store: IndexStore, level: LevelName, wanted: int | None) -> Iterator[Record]:
    page = min(1000, max(wanted, 100)) if wanted else None
    if level == "study":
        yield from store.scan_studies(page)
    elif level == "series":
        yield from store.scan_series(page)
    else:
        yield from store.scan_instances(page)

