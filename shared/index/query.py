"""The query planner: pick the most selective key for a QIDO query, return candidates.

Candidates are a superset of the matches; exact PS3.4 matching (wildcards, ranges,
person-name rules) is applied by :mod:`shared.dicomweb` on each candidate, lazily,
so ``limit`` stops the fetching early. Every supported key is answered from lookup
rows or partition keys: only a query with no supported key scans (and says so).

Lookup rows are written when a study settles (``DICOMFLOW_SETTLE_DELAY_SECONDS``
after its last arrival); instance rows are queryable by StudyInstanceUID at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from shared.index import keys
from shared.index.records import InstanceRecord, SeriesRecord, StudyRecord
from shared.index.store import IndexStore

LevelName = Literal["study", "series", "instance"]
_WILD = re.compile(r"[*?]")


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


def _pk_filter(store: IndexStore, kind: str, value: str) -> Iterator[dict[str, Any]]:
    prefix, wild = _literal_prefix(value)
    if not wild:
        yield from store.query_lookup("PartitionKey eq @pk", {"pk": keys.lookup_pk(kind, value)})
        return
    lo, hi = keys.prefix_range(kind, prefix)
    yield from store.query_lookup("PartitionKey ge @lo and PartitionKey lt @hi", {"lo": lo, "hi": hi})


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


def plan_and_fetch(store: IndexStore, level: LevelName, c: Criteria) -> tuple[Plan, Iterator[StudyRecord]]:
    """The plan and a lazy iterator of candidate records at ``level``."""
    plan = choose(level, c)
    return plan, _fetch(store, level, c, plan)


def _fetch(store: IndexStore, level: LevelName, c: Criteria, plan: Plan) -> Iterator[Any]:
    pairs: Iterable[tuple[str, str | None]]  # (study, series or None)
    if plan.kind == "scan":
        yield from _scan(store, level)
        return
    if plan.key == "StudyInstanceUID":
        pairs = ((s, None) for s in _dedupe(c.study_uids or []))
    elif plan.key == "SeriesInstanceUID":
        pairs = _series_pairs(store, c.series_uids or [])
    elif plan.key == "SOPInstanceUID":
        yield from _sop_candidates(store, c.sop_uids or [])
        return
    elif plan.key == "PatientID":
        pairs = ((e["RowKey"], None) for e in _pk_filter(store, keys.Lookup.PATIENT_ID, c.patient_id or ""))
    elif plan.key == "AccessionNumber":
        pairs = ((e["RowKey"], None) for e in _pk_filter(store, keys.Lookup.ACCESSION, c.accession_number or ""))
    elif plan.key == "Modality":
        pairs = _modality_pairs(store, c.modality or "", c.study_date, level)
    elif plan.key == "StudyDate":
        lo, hi = c.study_date or (None, None)
        flt = "PartitionKey ge @lo and PartitionKey le @hi"
        params = {"lo": keys.lookup_pk(keys.Lookup.STUDY_DATE, lo or "0"),
                  "hi": keys.lookup_pk(keys.Lookup.STUDY_DATE, hi or "99999999")}
        pairs = ((e["RowKey"], None) for e in store.query_lookup(flt, params))
    else:  # PatientName
        token = sorted(keys.name_tokens(_literal_prefix(c.patient_name or "")[0].split("^")[0]))[0]
        lo, hi = keys.prefix_range(keys.Lookup.NAME, token)
        pairs = ((e["RowKey"], None) for e in
                 store.query_lookup("PartitionKey ge @lo and PartitionKey lt @hi", {"lo": lo, "hi": hi}))
    yield from _expand(store, level, _dedupe_pairs(pairs))


def _dedupe_pairs(pairs: Iterable[tuple[str, str | None]]) -> Iterator[tuple[str, str | None]]:
    seen: set[tuple[str, str | None]] = set()
    for p in pairs:
        if p not in seen:
            seen.add(p)
            yield p


def _series_pairs(store: IndexStore, uids: list[str]) -> Iterator[tuple[str, str | None]]:
    for uid in _dedupe(uids):
        for e in store.query_lookup("PartitionKey eq @pk and RowKey eq @rk",
                                    {"pk": keys.uid_lookup_pk(keys.Lookup.SERIES, uid), "rk": uid}):
            yield e["study"], uid


def _sop_candidates(store: IndexStore, uids: list[str]) -> Iterator[InstanceRecord]:
    for uid in _dedupe(uids):
        for e in store.query_lookup("PartitionKey eq @pk and RowKey eq @rk",
                                    {"pk": keys.uid_lookup_pk(keys.Lookup.SOP, uid), "rk": uid}):
            got = store.get_instance(e["study"], e["series"], uid)
            if got is not None:
                yield got.record


def _modality_pairs(store: IndexStore, modality: str, dates: tuple[str | None, str | None] | None,
                    level: LevelName) -> Iterator[tuple[str, str | None]]:
    pk = keys.lookup_pk(keys.Lookup.MODALITY, modality.upper())
    flt, params = "PartitionKey eq @pk", {"pk": pk}
    if dates and (dates[0] or dates[1]):
        flt += " and RowKey ge @lo and RowKey lt @hi"
        params.update({"lo": f"{dates[0] or '0'}", "hi": f"{dates[1] or '99999999'}`"})
    for e in store.query_lookup(flt, params):
        yield e["study"], (e["series"] if level != "study" else None)


def _expand(store: IndexStore, level: LevelName, pairs: Iterable[tuple[str, str | None]]) -> Iterator[Any]:
    for study, series in pairs:
        if level == "study":
            rec = store.get_study(study)
            if rec is not None:
                yield rec
        elif level == "series":
            if series is not None:
                se = store.get_series(study, series)
                if se is not None:
                    yield se
            else:
                yield from store.list_series(study)
        elif series is not None:
            yield from store.list_series_instances(study, series)
        else:
            yield from store.list_study_instances(study)


def _scan(store: IndexStore, level: LevelName) -> Iterator[Any]:
    if level == "study":
        yield from store.scan_studies()
    elif level == "series":
        for e in store.series.list_entities():
            from shared.index.records import from_entity

            yield from_entity(SeriesRecord, e)
    else:
        from shared.index.records import from_entity

        for e in store.instances.list_entities():
            if e["RowKey"] != keys.SETTLE_MARKER_ROW:
                yield from_entity(InstanceRecord, e)
