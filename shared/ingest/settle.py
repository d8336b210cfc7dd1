"""Settle a study: derive everything that is not written per instance, from its partition.

One run reads the study's partition (instance rows with their DICOM JSON, and its change
entries) and the study row, then writes only what changed since the run before:

* series/study aggregates (counts, ModalitiesInStudy, ...), exact because recomputed;
* lookup rows (PatientID, AccessionNumber, StudyDate, names, Modality, series and SOP UIDs);
* series metadata bundles (one blob per series, built from the rows: no sidecar reads);
* the unpublished change entries: to the region's change feed, and as ``Dicom.ImageCreated`` /
  ``ImageUpdated`` / ``ImageDeleted`` events, in one publish call with
* ``Dicom.SeriesStable`` / ``Dicom.StudyStable`` once no instance arrived for
  ``DICOMFLOW_STABLE_AGE_SECONDS`` (then the study's pending rows go: lookups cover it).

In a region of a pair, what this region indexed from the peer's replicated archive is derived and
listed in the change feed like the rest, but announces no event here: the region that ingested it
did, and its subscribers (inference, routing) ran there. A series is announced stable only if it
holds an instance ingested in this region.

Runs are scheduled by :mod:`shared.ingest.schedule`; a run that is not yet stable schedules the
next. A run that storage fails (throttling, an outage) puts its request back on the queue for later,
with a growing delay (:data:`RETRY_DELAYS`, about 50 minutes in all), instead of spending the queue
trigger's quick retries (host.json: 10 tries 30 s apart) and landing in the poison queue within
seconds; only when the queue itself cannot be written do those retries apply. The poison queue is
re-driven with its own backoff (:mod:`shared.ingest.redrive`).

Idempotent: one run at a time holds the study (a conditional write of its settle state row, in
the study's partition, that expires), and the run's result is committed in one transaction
conditional on that hold, so what a run announces is announced once; a crash repeats work (events
are at least once and keep their ids; the feed may then list an entry twice). The backfill path's
group runs settle several studies without the hold (their commit stays conditional).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import Transient
from shared.events.payloads import DicomEvent, image_event, series_event, study_event
from shared.events.types import EventType
from shared.index import changefeed, keys
from shared.index.records import (
    Action,
    ChangeEntry,
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
    series_part,
    study_part,
    to_entity,
)
from shared.index.sequence import time_of_seq
from shared.index.store import READS, FeedEntry, StudyPartition, utcnow
from shared.ingest.schedule import SettleRequest
from shared.ports import RowChanged, RowExists
from shared.rejection.service import rejection_of
from shared.services import Services
from shared.storage import blobs, layout
from shared.storage.regions import stamp_region

log = logging.getLogger(__name__)
#: What a run keeps for the next (the settle state row; before 2026-12, fields of the study row).
STATE_FIELDS = ("version", "stable_version", "series_versions", "lookup_keys", "lookup_fields", "last_arrival")
#: How long a settle run holds its study (a crashed run's hold simply expires).
LEASE_SECONDS = 300.0
BUSY_RETRY_SECONDS = 2.0
#: Seconds before each re-run of a request that storage failed; then the trigger's retries and the poison queue.
RETRY_DELAYS = (15.0, 60.0, 300.0, 900.0, 1800.0)


@dataclass(frozen=True, slots=True)
class SettleResult:
    study: str
    state: str  # busy | raced | settled | stable | deleted | unchanged | deferred | group
    series: int = 0
    instances: int = 0
    bundles: int = 0
    events: int = 0


def _version(rows: Sequence[InstanceRecord]) -> str:
    """Changes whenever an instance is added, replaced or removed."""
    stamps = sorted(f"{r.sop_instance_uid}:{r.digest[:12]}" for r in rows)
    return hashlib.sha256("|".join(stamps).encode()).hexdigest()[:24]


def study_fields(study: StudyRecord) -> dict[str, Any]:
    """The study-level fields every study lookup row carries, so a QIDO study query answers from
    the lookup rows alone (no read of the study row per candidate). ``updated_at`` is left out: it
    changes every run, the fields themselves only when the study does."""
    entity = to_entity(study, "", "")
    for name in ("PartitionKey", "RowKey", "updated_at"):
        entity.pop(name, None)
    return entity


def fields_version(fields: Mapping[str, Any]) -> str:
    """Changes whenever a study lookup row's fields do (then settle rewrites the rows)."""
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def study_lookups(study: StudyRecord, series: Sequence[SeriesRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    """The study's lookup rows keyed by study attributes and modality (never UID lookups), each
    with the study's fields (:func:`study_fields`)."""
    s = study.study_instance_uid
    fields = study_fields(study)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if study.patient_id:
        rows.append((*keys.value_lookup_keys(keys.Lookup.PATIENT_ID, study.patient_id, s), fields))
    if study.accession_number:
        rows.append((*keys.value_lookup_keys(keys.Lookup.ACCESSION, study.accession_number, s), fields))
    rows.append((keys.lookup_pk(keys.Lookup.STUDY_DATE, keys.study_date_value(study.study_date)), s, fields))
    for token in sorted(keys.name_tokens(study.patient_name or "")):
        rows.append((*keys.value_lookup_keys(keys.Lookup.NAME, token, s), fields))
    for se in series:
        if se.modality:
            rows.append((keys.lookup_pk(keys.Lookup.MODALITY, se.modality.upper()),
                         keys.modality_row_key(study.study_date, s, se.series_instance_uid),
                         {**fields, "study": s, "series": se.series_instance_uid}))
    return rows


def aggregate(instances: Sequence[InstanceRecord], now_iso: str
              ) -> tuple[StudyRecord, dict[str, list[InstanceRecord]], list[SeriesRecord]]:
    """The study and series records (exact aggregates) of a study's instance rows."""
    by_series: dict[str, list[InstanceRecord]] = defaultdict(list)
    for r in instances:
        by_series[r.series_instance_uid].append(r)
    study_rec = StudyRecord(**study_part(_newest(instances)))
    study_rec.modalities_in_study = sorted({r.modality for r in instances if r.modality})
    study_rec.sop_classes_in_study = sorted({r.sop_class_uid for r in instances if r.sop_class_uid})
    study_rec.number_of_study_related_series = len(by_series)
    study_rec.number_of_study_related_instances = len(instances)
    study_rec.updated_at = now_iso
    series_recs = []
    for members in by_series.values():
        newest = _newest(members)
        se = SeriesRecord(**study_part(study_rec), **series_part(newest))
        se.extended = dict(newest.extended)  # series-level extended tags: the series' own newest instance
        se.number_of_series_related_instances = len(members)
        se.derived = all(m.derived for m in members)
        se.updated_at = now_iso
        series_recs.append(se)
    return study_rec, by_series, series_recs


def uid_lookups(study: str, series: str, members: Sequence[InstanceRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    """The series' UID lookup and its instances' SOP lookups (in the study's UID shard)."""
    rows: list[tuple[str, str, dict[str, Any]]] = [
        (*keys.uid_lookup_keys(keys.Lookup.SERIES, study, series), {"study": study})]
    rows += [(*keys.uid_lookup_keys(keys.Lookup.SOP, study, m.sop_instance_uid), {"study": study, "series": series})
             for m in members]
    return rows


def _newest(rows: Sequence[InstanceRecord]) -> InstanceRecord:
    return max(rows, key=lambda r: (r.arrival, r.updated_at or r.ingested_at or ""))


@dataclass(slots=True)
class _Plan:
    """What one settle run of one study writes, announces and answers (computed before any write, so
    the runs of a group share their batches: :meth:`SettleService.settle_group`)."""

    study: str
    part: StudyPartition
    result: SettleResult
    stable: bool = False
    last_arrival: float = 0.0
    #: Nothing to write: only the pending rows (stable) or the next run (not yet stable).
    unchanged: bool = False
    lookups: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)
    bundles: list[tuple[str, list[InstanceRecord]]] = field(default_factory=list)
    gone_series: list[str] = field(default_factory=list)
    series: list[SeriesRecord] | None = None
    feed: list[FeedEntry] = field(default_factory=list)
    feed_states: list[tuple[int, str]] = field(default_factory=list)
    events: list[DicomEvent] = field(default_factory=list)
    unpublished: list[ChangeEntry] = field(default_factory=list)
    study_rec: StudyRecord | None = None
    #: The state the run commits (what it derived), and the state row's ETag it commits against.
    extra: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None
    prev: Mapping[str, Any] = field(default_factory=dict)
    #: This run holds the study (a single run): even an unchanged run gives it back.
    held: bool = False
    #: The study's pending rows as the batched path wrote them (series -> ETag): removed without a read.
    pending: Mapping[str, str] | None = None
    #: A stable run: the series whose pending rows it removes (those written since the study was last stable).
    pending_series: list[str] = field(default_factory=list)


class SettleService:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def settle(self, request: SettleRequest) -> SettleResult:
        from azure.core.exceptions import AzureError  # what the storage adapters raise when storage fails

        try:
            return self._settle_once(request)
        except AzureError as exc:
            if request.attempt >= len(RETRY_DELAYS):
                raise  # the trigger's retries, then the poison queue (re-driven later)
            delay = RETRY_DELAYS[request.attempt]
            later = dataclasses.replace(request, attempt=request.attempt + 1)
            self.svc.queues.send(layout.SETTLE_QUEUE, later.to_message(), delay_seconds=delay)  # may raise: retried
            log.warning("Settle %s: storage failed (%s); settling again in %.0f s (attempt %d of %d)",
                        request.study or f"group of {len(request.studies)}", type(exc).__name__, delay, later.attempt,
                        len(RETRY_DELAYS))
            return SettleResult(request.study, "deferred")

    def _settle_once(self, request: SettleRequest) -> SettleResult:
        svc = self.svc
        svc.ensure_ready()
        if request.studies:
            results = self.settle_group(request.studies, force=request.force, pending=request.pending,
                                        hold=request.hold)
            return SettleResult("", "group", sum(r.series for r in results), sum(r.instances for r in results),
                                sum(r.bundles for r in results), sum(r.events for r in results))
        return self._run([request.study], request, hold=True)[0]

    def settle_group(self, studies: Sequence[str], *, force: bool = False,
                     pending: Mapping[str, Mapping[str, str]] | None = None, hold: bool = False) -> list[SettleResult]:
        """Settle several studies in one run (a process's arrival group on the per-file path, a chunk's studies
        on the backfill path): the partitions are read side by side, and what the runs write to shared
        partitions (lookup rows of the same date, modality or UID shard, change-feed shards) and the events
        go in shared batches and one publish call. With ``hold`` (the per-file path's groups) each study whose
        images the run announces is held, as a single run holds it; without (the backfill path's), a run that
        raced another (its conditional state write fails) runs that study again later, and its events may have
        gone out twice (at least once)."""
        uids = list(dict.fromkeys(studies))
        results = self._run(uids, SettleRequest(force=force), hold=hold, pending=pending, group=True)
        states = Counter(r.state for r in results)
        log.info("Settle group of %d studies: %s", len(uids), ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        return results

    def _run(self, uids: Sequence[str], request: SettleRequest, *, hold: bool, group: bool = False,
             pending: Mapping[str, Mapping[str, str]] | None = None) -> list[SettleResult]:
        """One run over ``uids``: read each partition, plan, hold what announces (``hold``), write.

        The plan comes first: a run with nothing to write makes no request beyond its read, and a run that only
        announces stability or rewrites derived rows is not held (its commit is conditional on the state it
        read, so a concurrent run makes one of them run again; a stable event may then go out twice, with
        its id). A held run gives the study back with its result (or, if it fails, at once)."""
        svc = self.svc
        if len(uids) == 1:
            reads = [(uids[0], svc.index.study_partition(uids[0]))]
        else:
            reads = list(READS.map(lambda s: (s, svc.index.study_partition(s)), uids))
        plans: list[_Plan] = []
        emptied: list[tuple[str, StudyPartition, dict[str, Any]]] = []
        busy: dict[str, float] = {}
        for study, part in reads:
            wait = svc.index.held_for(part.state)
            if hold and wait > 0:  # another run works on this study: look again shortly
                busy[study] = wait
                continue
            prev = self._previous(study, part)
            if not part.instances:
                emptied.append((study, part, prev))
                continue
            plan = self._plan(study, part, prev, request, part.state.etag if part.state is not None else None)
            plan.pending = (pending or {}).get(study)
            plans.append(plan)
        # One run at a time announces a study's images (or its deletion, or a forced re-announcement).
        wanted = [p for p in plans if hold and not p.unchanged and (p.unpublished or request.force or request.rederive)]
        claims: list[tuple[str, StudyPartition, str | None]] = [(p.study, p.part, None) for p in wanted]
        claims += [(study, part, None) for study, part, _ in emptied] if hold else []
        got = (list(READS.map(lambda c: svc.index.hold_settle_state(c[0], c[1].state, LEASE_SECONDS), claims))
               if len(claims) > 1 else [svc.index.hold_settle_state(c[0], c[1].state, LEASE_SECONDS) for c in claims])
        held: dict[str, str] = {}
        for (study, _, _), (etag, wait) in zip(claims, got, strict=True):
            if etag is None:
                busy[study] = wait
            else:
                held[study] = etag
        plans = [p for p in plans if p.study not in busy]
        for p in plans:
            if p.study in held:
                p.etag, p.held = held[p.study], True
        results: list[SettleResult] = []
        try:
            for study, part, prev in emptied:
                if study not in busy:
                    results.append(self._emptied(study, part, prev))
            results += self._apply(plans, group=group and hold)
        except BaseException:
            for p in plans:  # a failed run: the retry need not wait
                if p.held:
                    svc.index.release_settle_state(p.study, p.prev, held[p.study])
            for study, _, prev in emptied:
                if study in held:
                    svc.index.release_settle_state(study, prev, held[study])
            raise
        for study, wait in busy.items():
            delay = min(wait, max(BUSY_RETRY_SECONDS, svc.settings.settle_delay_seconds))
            svc.scheduler.reschedule(study, delay, force=request.force, rederive=request.rederive)
            log.info("Settle %s: another run holds the study; settling again in %.0f s", study, delay)
            results.append(SettleResult(study, "busy"))
        return results

    def _previous(self, study: str, part: StudyPartition) -> dict[str, Any]:
        """What the study's last run derived: its state row; for a study last settled before the state row
        existed (published changes, no state row), the study row's fields, where that state was kept."""
        if part.state is not None:
            return {k: v for k, v in part.state.items() if k not in ("PartitionKey", "RowKey", "held_until")}
        if any(c.published for c in part.changes):
            row = self.svc.index.get_study_row(study)
            if row is not None:
                return {k: row.get(k) for k in STATE_FIELDS if row.get(k) is not None}
        return {}

    def _plan(self, study: str, part: StudyPartition, prev: Mapping[str, Any], request: SettleRequest,
              etag: str | None) -> _Plan:
        """What one run of ``study`` writes, from its partition and its previous state ``prev``; ``etag``: the
        state row's as held (one run) or read (a group), which the result is committed against."""
        svc = self.svc
        now_iso = utcnow()
        last_arrival = _newest(part.instances).arrival
        stable = svc.scheduler.clock() - last_arrival >= svc.settings.stable_age_seconds
        study_rec, by_series, series_recs = aggregate(part.instances, now_iso)
        plan = _Plan(study, part, SettleResult(study, "unchanged", len(by_series), len(part.instances)), stable,
                     last_arrival, etag=etag, prev=prev)

        old_versions: dict[str, str] = orjson.loads(prev.get("series_versions") or "{}")
        versions = {uid: _version(m) for uid, m in by_series.items()}
        changed = sorted(uid for uid in by_series if old_versions.get(uid) != versions[uid])
        study_version = _version(part.instances)
        unpublished = [c for c in part.changes if not c.published]
        rewrite = request.force or request.rederive  # every derived row and bundle, changed or not
        if (not changed and not unpublished and prev.get("version") == study_version and not rewrite
                and (not stable or prev.get("stable_version") == study_version)):
            plan.unchanged = True
            return plan

        # Lookups: the study's (new keys, or all of them when the study's fields changed) and the
        # UID lookups of changed series.
        lookups = study_lookups(study_rec, series_recs)
        old_keys = {tuple(k) for k in orjson.loads(prev.get("lookup_keys") or "[]")}
        new_keys = {(pk, rk) for pk, rk, _ in lookups}
        lookup_fields = fields_version(study_fields(study_rec))
        fields_changed = rewrite or prev.get("lookup_fields") != lookup_fields
        plan.lookups = [row for row in lookups if fields_changed or (row[0], row[1]) not in old_keys]
        for uid in (sorted(by_series) if rewrite else changed):
            plan.lookups += uid_lookups(study, uid, by_series[uid])
        removed_sops = {c.sop for c in unpublished if c.action is Action.DELETE}
        removed_sops -= {r.sop_instance_uid for r in part.instances}
        gone_series = set(old_versions) - set(by_series)
        stale = sorted(old_keys - new_keys)
        stale += [keys.uid_lookup_keys(keys.Lookup.SOP, study, sop) for sop in sorted(removed_sops)]
        stale += [keys.uid_lookup_keys(keys.Lookup.SERIES, study, uid) for uid in sorted(gone_series)]
        plan.stale = stale
        plan.bundles = [(uid, by_series[uid]) for uid in (sorted(by_series) if rewrite else changed)
                        if len(by_series[uid]) >= layout.BUNDLE_MIN_INSTANCES]  # a smaller one: its rows
        plan.gone_series = sorted(gone_series)
        if changed or gone_series or rewrite or prev.get("version") != study_version:
            plan.series = series_recs

        plan.unpublished = unpublished
        plan.feed, plan.feed_states, plan.events = self._announce(study, part, unpublished)
        stable_version = str(prev.get("stable_version") or "")
        if stable and (stable_version != study_version or request.force):
            ours = {uid for uid, members in by_series.items() if any(self._local(stamp_region(m.stamp))
                                                                       for m in members)}
            for se in series_recs:
                if se.series_instance_uid not in ours:
                    continue  # indexed from the peer's archive: its region announced it
                if se.series_instance_uid in changed or request.force or stable_version != study_version:
                    plan.events.append(series_event(EventType.SERIES_STABLE, se,
                                                    service_host=svc.settings.service_host_name,
                                                    partition=svc.settings.partition_name,
                                                    sequence=versions[se.series_instance_uid]))
            if ours:
                plan.events.append(study_event(EventType.STUDY_STABLE, study_rec,
                                               service_host=svc.settings.service_host_name,
                                               partition=svc.settings.partition_name, sequence=study_version))
            stable_version = study_version
        plan.study_rec = study_rec
        stable_arrival = float(prev.get("stable_arrival") or 0.0)
        if stable:
            # The series with instances written since the study was last stable: their pending rows (every
            # writer of one writes it, unless it wrote one within the pending window, which no earlier
            # stable run can have removed), removed by their keys.
            plan.pending_series = sorted({r.series_instance_uid for r in part.instances if r.arrival > stable_arrival})
            stable_arrival = last_arrival
        plan.extra = {
            "version": study_version,
            "stable_version": stable_version,
            "series_versions": orjson.dumps(versions).decode(),
            "lookup_keys": orjson.dumps(sorted(new_keys)).decode(),
            "lookup_fields": lookup_fields,
            "last_arrival": last_arrival,
            "stable_arrival": stable_arrival,
        }
        plan.result = SettleResult(study, "stable" if stable else "settled", len(by_series), len(part.instances),
                                   len(plan.bundles), len(plan.events))
        return plan

    def _apply(self, plans: Sequence[_Plan], *, group: bool = False) -> list[SettleResult]:
        """Write what the plans say, each study in the order a single run writes it (lookups, bundles,
        aggregates, feed, events, pending rows once stable, the study row, the state with the changes marked
        published), what several plans write to one partition in shared batches. ``group``: the follow-up
        runs of the studies not yet stable go in one message (a held group's)."""
        svc = self.svc
        work = [p for p in plans if not p.unchanged]
        svc.index.put_lookups([row for p in work for row in p.lookups])
        svc.index.delete_lookups([key for p in work for key in p.stale])
        for p in work:
            for uid, members in p.bundles:
                self._write_bundle(p.study, uid, members, p.part)
            for uid in p.gone_series:
                svc.blobs.delete(layout.METADATA, layout.series_metadata_path(p.study, uid))
            if p.series is not None:
                svc.index.put_series(p.study, p.series)
                svc.index.delete_series_rows(p.study, p.gone_series)
        feed = [e for p in work for e in p.feed]
        if feed:  # sequenced now, just before the write, so the commit-within promise starts here
            fresh = {}
            for e in feed:
                fresh[e.seq] = svc.sequencer.next()
            for p in work:
                for c in p.unpublished:
                    c.feed_seq = fresh.get(c.feed_seq, c.feed_seq)
            self._append_feed([dataclasses.replace(e, seq=fresh[e.seq]) for e in feed],
                              [c for p in work for c in p.unpublished])
        for p in work:
            if p.feed_states:  # earlier published entries of the instances changed now are no longer current
                svc.index.set_feed_states(p.study, p.feed_states)
        events = [e for p in work for e in p.events]
        if events:
            svc.publisher.publish(events)
        # Stable: the pending rows go (the lookups written above find the study now), before the state, so a
        # run that dies in between is repeated whole.
        for p in plans:
            if p.stable and p.pending:  # the batched path's, as written (even if another run settled the study)
                svc.index.delete_pending_known(p.study, p.pending)
            elif p.stable and p.pending_series:
                svc.index.delete_pending_series(p.study, p.pending_series, older_than=p.last_arrival)
        results = []
        waits: dict[str, float] = {}
        for p in plans:
            if not p.unchanged or p.held:
                try:
                    if p.unchanged:  # give back the study this run held, state as it was
                        svc.index.commit_settle_state(p.study, p.prev, etag=p.etag)
                    else:
                        assert p.study_rec is not None
                        if p.series is not None:  # the aggregates changed
                            svc.index.upsert_study(p.study_rec)
                        svc.index.commit_settle_state(p.study, p.extra, etag=p.etag, published=p.unpublished)
                except (RowChanged, RowExists):
                    # Another run of this study wrote meanwhile (from a newer read or an older one):
                    # run once more, later, from a fresh read (and rewrite the aggregates).
                    svc.scheduler.reschedule(p.study, max(1.0, svc.settings.settle_delay_seconds), force=True)
                    log.info("Settle %s: another run wrote the settle state meanwhile; settling again", p.study)
                    r = p.result
                    results.append(SettleResult(p.study, "raced", r.series, r.instances, r.bundles, r.events))
                    continue
            if not p.stable:
                waits[p.study] = _wait(svc, p.last_arrival)
            if not p.unchanged:
                r = p.result
                log.info("Settle %s: %d series, %d instances, %d bundles, %d events%s", p.study, r.series,
                         r.instances, r.bundles, r.events, "" if p.stable else " (not yet stable)")
            results.append(p.result)
        if group:
            svc.scheduler.reschedule_group(waits)
        else:
            for study, wait in waits.items():
                svc.scheduler.reschedule(study, wait)
        return results

    # -- steps -------------------------------------------------------------------------------------
    def _local(self, origin: str) -> bool:
        """A change of this region's own ingest (not one indexed from the peer's replicated archive)."""
        return not origin or origin == self.svc.topology.region

    def _announce(self, study: str, part: StudyPartition, unpublished: Sequence[ChangeEntry]
                  ) -> tuple[list[FeedEntry], list[tuple[int, str]], list[DicomEvent]]:
        """The unpublished changes: the region's change-feed entries, the new states of earlier entries of
        the same instances, and the image events (published with the run's other events)."""
        if not unpublished:
            return [], [], []
        svc = self.svc
        rows = {r.sop_instance_uid: r for r in part.instances}
        latest: dict[str, int] = {}
        for c in part.changes:
            latest[c.sop] = max(latest.get(c.sop, 0), c.seq)
        now = dt.datetime.now(dt.UTC)
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        feed: list[FeedEntry] = []
        events: list[DicomEvent] = []
        for c in sorted(unpublished, key=lambda c: c.seq):
            c.feed_seq = svc.sequencer.next()
            superseded = latest[c.sop] != c.seq
            state = "deleted" if (c.action is Action.DELETE or c.sop not in rows) else (
                "replaced" if superseded else "current")
            origin = c.origin or svc.topology.region
            feed.append(FeedEntry(c.feed_seq, study, c.series, c.sop, str(c.action), state, stamp, origin))
            rec = rows.get(c.sop) or InstanceRecord(study_instance_uid=study, series_instance_uid=c.series,
                                                    sop_instance_uid=c.sop)
            kind = {Action.CREATE: EventType.IMAGE_CREATED, Action.UPDATE: EventType.IMAGE_UPDATED,
                    Action.DELETE: EventType.IMAGE_DELETED}[c.action]
            if kind is not EventType.IMAGE_DELETED and superseded:
                continue  # a later change of the same instance is announced instead
            if not self._local(origin):
                continue  # indexed from the peer's replicated archive: the peer announced it
            archived = svc.topology.own(layout.ARCHIVE)
            event = image_event(kind, rec, service_host=svc.settings.service_host_name,
                                partition=svc.settings.partition_name, sequence=c.seq,
                                archive_path=f"{archived}/{layout.instance_path(study, c.series, c.sop)}")
            rejection = rejection_of(c.source) if c.action is Action.DELETE else None
            if rejection is not None:  # withdrawn by an IOCM rejection note: say so (code, note's SOP UID)
                event.data.update({"rejectionCode": rejection[0], "rejectionNote": rejection[1]})
            events.append(event)
        changed_now = {c.sop for c in unpublished}
        older = [c for c in part.changes if c.published and c.feed_seq and c.sop in changed_now]
        states = [(c.feed_seq, "deleted" if c.sop not in rows else "replaced") for c in older]
        return feed, states, events

    def _append_feed(self, feed: list[FeedEntry], changes: Sequence[ChangeEntry]) -> None:
        """Append to the change feed within :data:`changefeed.COMMIT_WITHIN_SECONDS` of the entries'
        sequences, the promise a follower's cursor relies on (it re-reads that much on every pass): a
        slower write (throttling, retries) is listed again under fresh sequences, so an entry may appear
        twice in the feed but never behind a cursor that has passed it."""
        svc = self.svc
        for _ in range(3):
            svc.index.append_feed(feed)
            late = time.time() - time_of_seq(min(e.seq for e in feed))
            if late <= changefeed.COMMIT_WITHIN_SECONDS:
                return
            log.warning("Settle %s: the change feed write took %.0f s; listing its %d entries again under new "
                        "sequences", feed[0].study, late, len(feed))
            by_seq = {c.feed_seq: c for c in changes}
            fresh = []
            for e in feed:
                seq = svc.sequencer.next()
                if e.seq in by_seq:
                    by_seq[e.seq].feed_seq = seq
                fresh.append(dataclasses.replace(e, seq=seq))
            feed = fresh
        raise Transient(f"The change feed of study {feed[0].study} could not be written within "
                        f"{changefeed.COMMIT_WITHIN_SECONDS:.0f} s; the settle run will be retried.")

    def _write_bundle(self, study: str, series: str, members: Sequence[InstanceRecord], part: StudyPartition) -> None:
        """The series metadata bundle: every instance's DICOM JSON in one blob (WADO-RS series
        metadata is then a single read), in instance number order. The JSON comes from the rows
        read anyway; only metadata too large for a row is read from its sidecar."""
        ordered = sorted(members, key=lambda r: (r.instance_number if r.instance_number is not None else 1 << 30,
                                                 r.sop_instance_uid))
        docs: list[bytes] = []
        for r in ordered:
            raw = part.meta.get(r.sop_instance_uid)
            if raw is None and r.sop_instance_uid in part.meta_in_blob:
                raw = self.svc.blobs.read(layout.METADATA,
                                          layout.instance_metadata_path(study, series, r.sop_instance_uid))
            if raw:
                docs.append(raw)
        self.svc.blobs.write(layout.METADATA, layout.series_metadata_path(study, series),
                             b"[" + b",".join(docs) + b"]", content_type=blobs.DICOM_JSON)

    def _emptied(self, study: str, part: StudyPartition, prev: Mapping[str, Any]) -> SettleResult:
        """No instance left (DELETE): announce the deletions, remove aggregates, lookups, bundles."""
        svc = self.svc
        unpublished = [c for c in part.changes if not c.published]
        feed, states, events = self._announce(study, part, unpublished)
        if feed:
            self._append_feed(feed, unpublished)
        if states:
            svc.index.set_feed_states(study, states)
        if events:
            svc.publisher.publish(events)
        if unpublished:
            svc.index.mark_published(study, unpublished)
        old_versions: dict[str, str] = orjson.loads(prev.get("series_versions") or "{}")
        stale = [tuple(k) for k in orjson.loads(prev.get("lookup_keys") or "[]")]
        stale += [keys.uid_lookup_keys(keys.Lookup.SOP, study, c.sop) for c in unpublished]
        stale += [keys.uid_lookup_keys(keys.Lookup.SERIES, study, uid) for uid in old_versions]
        svc.index.delete_lookups([(str(pk), str(rk)) for pk, rk in stale])
        series_uids = set(old_versions) | {c.series for c in part.changes}
        for uid in series_uids:
            svc.blobs.delete(layout.METADATA, layout.series_metadata_path(study, uid))
        svc.index.delete_series_rows(study, sorted(set(old_versions)))
        svc.index.delete_pending(study, svc.index.pending_of(study))
        if prev:
            svc.index.delete_study_row(study)
        if part.state is not None or prev:
            svc.index.delete_settle_state(study)
        log.info("Settle %s: no instances left; aggregates and lookups removed", study)
        return SettleResult(study, "deleted", events=len(events))


def _wait(svc: Services, last_arrival: float) -> float:
    return max(1.0, svc.settings.stable_age_seconds - (svc.scheduler.clock() - last_arrival))
