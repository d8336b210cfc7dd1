"""Announce stable studies again, so their subscribers (inference, routing) run as usual.

For a model enabled after a study became stable, a routing rule added later, or a destination that
was down longer than routing retries: ``Dicom.SeriesStable`` (each stable series) and
``Dicom.StudyStable`` are published again for the chosen studies, built from the index rows exactly
as settle built them, each with a new event id (Event Grid delivers it as a new event). Nothing is
invoked directly: the subscriptions in infra/events.json decide who runs, as they do for settle.

Idempotent downstream, so reprocessing twice adds nothing: inference derives its result UIDs from
the source series, model and version (a second run's results are duplicates at ingest), and routing
skips destinations its delivery ledger has as delivered. Only a study settle announced as stable, and
unchanged since, is announced again (one that changed is settled, and announced, by settle itself).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from shared.events.payloads import DicomEvent, series_event, study_event
from shared.events.types import EventType
from shared.index.query import Criteria, plan_and_fetch
from shared.index.records import SeriesRecord, StudyRecord, from_entity
from shared.index.store import IndexStore
from shared.services import Services

log = logging.getLogger(__name__)

LEVELS = ("series", "study")


@dataclass(slots=True)
class StudyPlan:
    """What will be announced for one study (empty lists: nothing stable to announce)."""

    study_uid: str
    study: StudyRecord | None = None
    series: list[SeriesRecord] = field(default_factory=list)
    skipped: str | None = None  # "not-found" | "not-stable"

    def events(self, *, service_host: str, partition: str, levels: Iterable[str] = LEVELS,
               versions: dict[str, str] | None = None) -> list[DicomEvent]:
        versions = versions or {}
        out: list[DicomEvent] = []
        if "series" in levels:
            for se in self.series:
                out.append(series_event(EventType.SERIES_STABLE, se, service_host=service_host, partition=partition,
                                        sequence=versions.get(se.series_instance_uid, "")))
        if "study" in levels and self.study is not None:
            out.append(study_event(EventType.STUDY_STABLE, self.study, service_host=service_host,
                                   partition=partition, sequence=versions.get(self.study_uid, "")))
        for e in out:
            e.id = uuid.uuid4().hex  # a new event: the original id would read as a redelivery
        return out


def _valid_date(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    text = value.replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"{name} {value!r} is not a date: write YYYYMMDD or YYYY-MM-DD")
    return text


def find_studies(index: IndexStore, *, study_uids: Iterable[str] = (), date_from: str | None = None,
                 date_to: str | None = None) -> Iterator[str]:
    """Study UIDs: the given ones, then those whose StudyDate is in [date_from, date_to] (either end open;
    answered from the StudyDate lookup rows, no scan)."""
    seen: set[str] = set()
    for uid in study_uids:
        if uid not in seen:
            seen.add(uid)
            yield uid
    lo, hi = _valid_date(date_from, "--from"), _valid_date(date_to, "--to")
    if lo is None and hi is None:
        return
    _, candidates = plan_and_fetch(index, "study", Criteria(study_date=(lo, hi)))
    for rec in candidates:
        date = rec.study_date or ""
        if (lo and date < lo) or (hi and date > hi) or rec.study_instance_uid in seen:
            continue
        seen.add(rec.study_instance_uid)
        yield rec.study_instance_uid


def find_series(index: IndexStore, series_uids: Iterable[str]) -> dict[str, set[str]]:
    """Study UID -> the given series UIDs in it (from the SeriesInstanceUID lookup rows)."""
    wanted = list(dict.fromkeys(series_uids))
    out: dict[str, set[str]] = {}
    if not wanted:
        return out
    _, candidates = plan_and_fetch(index, "series", Criteria(series_uids=wanted))
    for rec in candidates:
        if isinstance(rec, SeriesRecord) and rec.series_instance_uid in wanted:
            out.setdefault(rec.study_instance_uid, set()).add(rec.series_instance_uid)
    return out


def plan_study(index: IndexStore, study_uid: str, *,
               series_uids: Iterable[str] | None = None) -> tuple[StudyPlan, dict[str, str]]:
    """What settle announced as stable for this study (and the versions it announced them at)."""
    plan = StudyPlan(study_uid)
    study_row = index.get_study_row(study_uid)
    if study_row is None:
        plan.skipped = "not-found"
        return plan, {}
    # The settle state (before 2026-12 its fields were kept on the study row).
    row = index.get_settle_state(study_uid) or study_row
    stable = str(row.get("stable_version") or "")
    if not stable or stable != str(row.get("version") or ""):
        plan.skipped = "not-stable"
        return plan, {}
    versions: dict[str, str] = {study_uid: stable, **orjson.loads(row.get("series_versions") or "{}")}
    plan.study = from_entity(StudyRecord, study_row)
    wanted = set(series_uids) if series_uids is not None else None
    plan.series = [se for se in index.list_series(study_uid)
                   if wanted is None or se.series_instance_uid in wanted]
    return plan, versions


def reannounce(services: Services, study_uid: str, *, series_uids: Iterable[str] | None = None,
               levels: Iterable[str] = LEVELS, dry_run: bool = False) -> tuple[StudyPlan, int]:
    """Publish the study's stable events again; returns the plan and how many events were published."""
    plan, versions = plan_study(services.index, study_uid, series_uids=series_uids)
    levels = tuple(levels)
    if series_uids is not None:
        levels = tuple(lv for lv in levels if lv == "series")
    settings = services.settings
    events = plan.events(service_host=settings.service_host_name, partition=settings.partition_name,
                         levels=levels, versions=versions)
    if events and not dry_run:
        services.publisher.publish(events)
        log.info("Reprocess %s: %d events announced again", study_uid, len(events))
    return plan, 0 if dry_run else len(events)
