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

Idempotent: the study row written last is conditional on the ETag read first, and one run
at a time holds the study (a lease row beside the study row), so what a run announces is
announced once; a crash repeats work (events are at least once and keep their ids; the feed may
then list an entry twice).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.events.payloads import DicomEvent, image_event, series_event, study_event
from shared.events.types import EventType
from shared.index import keys
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
from shared.index.store import FeedEntry, StudyPartition, utcnow
from shared.ingest.schedule import SettleRequest
from shared.ports import RowChanged, RowExists
from shared.services import Services
from shared.storage import blobs, layout
from shared.storage.regions import stamp_region

log = logging.getLogger(__name__)
#: How long a settle run holds its study (a crashed run's hold simply expires).
LEASE_SECONDS = 300.0
BUSY_RETRY_SECONDS = 2.0
#: Seconds before each re-run of a request that storage failed; then the trigger's retries and the poison queue.
RETRY_DELAYS = (15.0, 60.0, 300.0, 900.0, 1800.0)


@dataclass(frozen=True, slots=True)
class SettleResult:
    study: str
    state: str  # busy | raced | settled | stable | deleted | unchanged | deferred
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
        rows.append((keys.lookup_pk(keys.Lookup.PATIENT_ID, study.patient_id), s, fields))
    if study.accession_number:
        rows.append((keys.lookup_pk(keys.Lookup.ACCESSION, study.accession_number), s, fields))
    rows.append((keys.lookup_pk(keys.Lookup.STUDY_DATE, keys.study_date_value(study.study_date)), s, fields))
    for token in sorted(keys.name_tokens(study.patient_name or "")):
        rows.append((keys.lookup_pk(keys.Lookup.NAME, token), s, fields))
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
    """The series' UID lookup and its instances' SOP lookups (one partition per kind and study)."""
    rows: list[tuple[str, str, dict[str, Any]]] = [
        (keys.uid_lookup_pk(keys.Lookup.SERIES, study), series, {"study": study})]
    rows += [(keys.uid_lookup_pk(keys.Lookup.SOP, study), m.sop_instance_uid, {"study": study, "series": series})
             for m in members]
    return rows


def _newest(rows: Sequence[InstanceRecord]) -> InstanceRecord:
    return max(rows, key=lambda r: (r.arrival, r.updated_at or r.ingested_at or ""))


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
            log.warning("Settle %s: storage failed (%s); settling again in %.0f s (attempt %d of %d)", request.study,
                        type(exc).__name__, delay, later.attempt, len(RETRY_DELAYS))
            return SettleResult(request.study, "deferred")

    def _settle_once(self, request: SettleRequest) -> SettleResult:
        svc = self.svc
        svc.ensure_ready()
        study = request.study
        lease, wait = svc.index.acquire_settle_lease(study, LEASE_SECONDS)
        if lease is None:  # another run works on this study: look again shortly (it is usually done by then)
            delay = min(wait, max(BUSY_RETRY_SECONDS, svc.settings.settle_delay_seconds))
            svc.scheduler.reschedule(study, delay, force=request.force, rederive=request.rederive)
            log.info("Settle %s: another run holds the study; settling again in %.0f s", study, delay)
            return SettleResult(study, "busy")
        try:
            return self._settle(request)
        finally:
            svc.index.release_settle_lease(study, lease)

    def _settle(self, request: SettleRequest) -> SettleResult:
        svc = self.svc
        study = request.study
        part = svc.index.study_partition(study)
        study_row = svc.index.get_study_row(study)
        prev: Mapping[str, Any] = study_row or {}
        if not part.instances:
            return self._emptied(study, part, prev, study_row.etag if study_row is not None else None)

        now_iso = utcnow()
        last_arrival = _newest(part.instances).arrival
        stable = svc.scheduler.clock() - last_arrival >= svc.settings.stable_age_seconds
        study_rec, by_series, series_recs = aggregate(part.instances, now_iso)

        old_versions: dict[str, str] = orjson.loads(prev.get("series_versions") or "{}")
        versions = {uid: _version(m) for uid, m in by_series.items()}
        changed = sorted(uid for uid in by_series if old_versions.get(uid) != versions[uid])
        study_version = _version(part.instances)
        unpublished = [c for c in part.changes if not c.published]
        rewrite = request.force or request.rederive  # every derived row and bundle, changed or not
        if (not changed and not unpublished and prev.get("version") == study_version and not rewrite
                and (not stable or prev.get("stable_version") == study_version)):
            if stable:
                svc.index.delete_pending(study, svc.index.pending_of(study))
            else:
                svc.scheduler.reschedule(study, _wait(svc, last_arrival))
            return SettleResult(study, "unchanged", len(by_series), len(part.instances))

        # Lookups: the study's (new keys, or all of them when the study's fields changed) and the
        # UID lookups of changed series.
        lookups = study_lookups(study_rec, series_recs)
        old_keys = {tuple(k) for k in orjson.loads(prev.get("lookup_keys") or "[]")}
        new_keys = {(pk, rk) for pk, rk, _ in lookups}
        lookup_fields = fields_version(study_fields(study_rec))
        fields_changed = rewrite or prev.get("lookup_fields") != lookup_fields
        write = [row for row in lookups if fields_changed or (row[0], row[1]) not in old_keys]
        for uid in (sorted(by_series) if rewrite else changed):
            write += uid_lookups(study, uid, by_series[uid])
        svc.index.put_lookups(write)
        removed_sops = {c.sop for c in unpublished if c.action is Action.DELETE}
        removed_sops -= {r.sop_instance_uid for r in part.instances}
        gone_series = set(old_versions) - set(by_series)
        stale = sorted(old_keys - new_keys)
        stale += [(keys.uid_lookup_pk(keys.Lookup.SOP, study), sop) for sop in sorted(removed_sops)]
        stale += [(keys.uid_lookup_pk(keys.Lookup.SERIES, study), uid) for uid in sorted(gone_series)]
        svc.index.delete_lookups(stale)

        bundles = 0
        for uid in (sorted(by_series) if rewrite else changed):
            self._write_bundle(study, uid, by_series[uid], part)
            bundles += 1
        for uid in gone_series:
            svc.blobs.delete(layout.METADATA, layout.series_metadata_path(study, uid))
        if changed or gone_series or rewrite or prev.get("version") != study_version:
            svc.index.put_series(study, series_recs)
            svc.index.delete_series_rows(study, sorted(gone_series))

        events = self._announce(study, part, unpublished)
        stable_version = str(prev.get("stable_version") or "")
        if stable and (stable_version != study_version or request.force):
            ours = {uid for uid, members in by_series.items() if any(self._local(stamp_region(m.stamp))
                                                                       for m in members)}
            for se in series_recs:
                if se.series_instance_uid not in ours:
                    continue  # indexed from the peer's archive: its region announced it
                if se.series_instance_uid in changed or request.force or stable_version != study_version:
                    events.append(series_event(EventType.SERIES_STABLE, se, service_host=svc.settings.service_host_name,
                                               partition=svc.settings.partition_name, sequence=versions[
                                                   se.series_instance_uid]))
            if ours:
                events.append(study_event(EventType.STUDY_STABLE, study_rec,
                                          service_host=svc.settings.service_host_name,
                                          partition=svc.settings.partition_name, sequence=study_version))
            stable_version = study_version
        if events:
            svc.publisher.publish(events)
        if unpublished:
            svc.index.mark_published(study, unpublished)
        extra = {
            "version": study_version,
            "stable_version": stable_version,
            "series_versions": orjson.dumps(versions).decode(),
            "lookup_keys": orjson.dumps(sorted(new_keys)).decode(),
            "lookup_fields": lookup_fields,
            "last_arrival": last_arrival,
        }
        try:
            svc.index.put_study(study_rec, extra, etag=study_row.etag if study_row is not None else None)
        except (RowChanged, RowExists):
            # Another run of this study wrote meanwhile (from a newer read or an older one):
            # run once more, later, from a fresh read.
            svc.scheduler.reschedule(study, max(1.0, svc.settings.settle_delay_seconds), force=True)
            log.info("Settle %s: another run wrote the study row meanwhile; settling again", study)
            return SettleResult(study, "raced", len(by_series), len(part.instances), bundles, len(events))
        if stable:
            svc.index.delete_pending(study, svc.index.pending_of(study))
        else:
            svc.scheduler.reschedule(study, _wait(svc, last_arrival))
        log.info("Settle %s: %d series, %d instances, %d bundles, %d events%s", study, len(by_series),
                 len(part.instances), bundles, len(events), "" if stable else " (not yet stable)")
        return SettleResult(study, "stable" if stable else "settled", len(by_series), len(part.instances), bundles,
                            len(events))

    # -- steps -------------------------------------------------------------------------------------
    def _local(self, origin: str) -> bool:
        """A change of this region's own ingest (not one indexed from the peer's replicated archive)."""
        return not origin or origin == self.svc.topology.region

    def _announce(self, study: str, part: StudyPartition, unpublished: Sequence[ChangeEntry]) -> list[DicomEvent]:
        """The unpublished changes: to the region's change feed, and as image events (returned,
        published with the run's other events)."""
        if not unpublished:
            return []
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
            events.append(image_event(kind, rec, service_host=svc.settings.service_host_name,
                                      partition=svc.settings.partition_name, sequence=c.seq,
                                      archive_path=f"{archived}/{layout.instance_path(study, c.series, c.sop)}"))
        svc.index.append_feed(feed)
        # Earlier published entries of the instances changed now are no longer current.
        changed_now = {c.sop for c in unpublished}
        older = [c for c in part.changes if c.published and c.feed_seq and c.sop in changed_now]
        if older:
            svc.index.set_feed_states(study, [(c.feed_seq, "deleted" if c.sop not in rows else "replaced")
                                              for c in older])
        return events

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

    def _emptied(self, study: str, part: StudyPartition, prev: Mapping[str, Any], etag: str | None) -> SettleResult:
        """No instance left (DELETE): announce the deletions, remove aggregates, lookups, bundles."""
        svc = self.svc
        unpublished = [c for c in part.changes if not c.published]
        events = self._announce(study, part, unpublished)
        if events:
            svc.publisher.publish(events)
        if unpublished:
            svc.index.mark_published(study, unpublished)
        old_versions: dict[str, str] = orjson.loads(prev.get("series_versions") or "{}")
        stale = [tuple(k) for k in orjson.loads(prev.get("lookup_keys") or "[]")]
        stale += [(keys.uid_lookup_pk(keys.Lookup.SOP, study), c.sop) for c in unpublished]
        stale += [(keys.uid_lookup_pk(keys.Lookup.SERIES, study), uid) for uid in old_versions]
        svc.index.delete_lookups([(str(pk), str(rk)) for pk, rk in stale])
        series_uids = set(old_versions) | {c.series for c in part.changes}
        for uid in series_uids:
            svc.blobs.delete(layout.METADATA, layout.series_metadata_path(study, uid))
        svc.index.delete_series_rows(study, sorted(set(old_versions)))
        svc.index.delete_pending(study, svc.index.pending_of(study))
        if etag is not None:
            svc.index.delete_study_row(study)
        log.info("Settle %s: no instances left; aggregates and lookups removed", study)
        return SettleResult(study, "deleted", events=len(events))


def _wait(svc: Services, last_arrival: float) -> float:
    return max(1.0, svc.settings.stable_age_seconds - (svc.scheduler.clock() - last_arrival))
