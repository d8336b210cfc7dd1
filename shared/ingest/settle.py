"""Settle a study: exact aggregates, lookup rows, series metadata bundles, stable events.

Triggered by a queue message per ingested instance, delayed by
``DICOMFLOW_SETTLE_DELAY_SECONDS``. Debounced: the study's marker row holds the time
of the last arrival, and a message older than that is dropped (the newer arrival
sent its own). Everything is recomputed from the study's instance partition, so the
result is exact, idempotent and free of write contention between instances.
``Dicom.SeriesStable``/``StudyStable`` go out once no instance has arrived for
``DICOMFLOW_STABLE_AGE_SECONDS``; until then the message re-schedules itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from shared.events.payloads import series_event, study_event
from shared.events.types import EventType
from shared.index import keys
from shared.index.records import InstanceRecord, SeriesRecord, StudyRecord, series_part, study_part
from shared.index.store import utcnow
from shared.ingest.context import Context
from shared.storage import blobs, layout

log = logging.getLogger(__name__)
BUNDLE_READERS = 8
BUNDLE_SKEW_SECONDS = 60.0  # replaced instances updated this close to the last build are re-read


def _minus(iso: str, seconds: float) -> str:
    import datetime as dt

    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")) - dt.timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """The settle queue message: the one format its producers (ingest, DELETE, settle's own
    re-schedule) and its consumer (the ``settle`` function) share.

    ``arrival``: the arrival time the sender wrote into the study marker; the message runs only
    while that is still the marker's last arrival. ``token`` marks a settle run's own
    re-schedule. ``force`` (DELETE, a crashed ingest's retry) runs regardless."""

    study: str
    arrival: float = 0.0
    token: str | None = None
    force: bool = False

    def to_message(self) -> str:
        body: dict[str, Any] = {"study": self.study, "arrival": self.arrival}
        if self.token is not None:
            body["token"] = self.token
        if self.force:
            body["force"] = True
        return orjson.dumps(body).decode()

    @classmethod
    def from_message(cls, body: bytes | str) -> SettleRequest:
        """Parse a queue message; a message that is not ours raises ``ValueError`` (the
        trigger's poison handling then parks it, after its retries)."""
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("study"), str):
            raise ValueError("A settle message is a JSON object with a 'study' UID.")
        return cls(study=doc["study"], arrival=float(doc.get("arrival", 0.0)), token=doc.get("token"),
                   force=bool(doc.get("force", False)))


def enqueue_settle(ctx: Context, study: str, delay: float, *, arrival: float | None = None,
                   token: str | None = None, force: bool = False) -> None:
    """Ask for a settle of ``study`` in ``delay`` seconds (see :class:`SettleRequest`)."""
    request = SettleRequest(study, time.time() if arrival is None else arrival, token, force)
    ctx.queue(layout.SETTLE_QUEUE).send_message(request.to_message(), visibility_timeout=max(0, round(delay)))


@dataclass(frozen=True, slots=True)
class SettleResult:
    study: str
    state: str  # superseded | settled | stable | deleted
    series: int = 0
    instances: int = 0
    bundles: int = 0
    events: int = 0


def _version(rows: list[InstanceRecord]) -> str:
    """Changes whenever an instance is added, replaced or removed."""
    stamps = sorted(f"{r.sop_instance_uid}:{r.digest[:12]}" for r in rows)
    import hashlib

    return hashlib.sha256("|".join(stamps).encode()).hexdigest()[:24]


def lookup_rows(study: StudyRecord, series: list[SeriesRecord],
                instances: list[InstanceRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every lookup row of one study (the planner's view of :mod:`shared.index.keys`)."""
    s = study.study_instance_uid
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if study.patient_id:
        rows.append((keys.lookup_pk(keys.Lookup.PATIENT_ID, study.patient_id), s, {}))
    if study.accession_number:
        rows.append((keys.lookup_pk(keys.Lookup.ACCESSION, study.accession_number), s, {}))
    rows.append((keys.lookup_pk(keys.Lookup.STUDY_DATE, study.study_date or "none"), s, {}))
    for token in sorted(keys.name_tokens(study.patient_name or "")):
        rows.append((keys.lookup_pk(keys.Lookup.NAME, token), s, {}))
    date = study.study_date or "none"
    for se in series:
        if se.modality:
            rows.append((keys.lookup_pk(keys.Lookup.MODALITY, se.modality.upper()),
                         f"{date}_{s}_{se.series_instance_uid}", {"study": s, "series": se.series_instance_uid}))
        rows.append((keys.uid_lookup_pk(keys.Lookup.SERIES, se.series_instance_uid), se.series_instance_uid,
                     {"study": s}))
    for inst in instances:
        rows.append((keys.uid_lookup_pk(keys.Lookup.SOP, inst.sop_instance_uid), inst.sop_instance_uid,
                     {"study": s, "series": inst.series_instance_uid}))
    return rows


class SettleService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def settle(self, request: SettleRequest) -> SettleResult:
        """One settle message (see :class:`SettleRequest`)."""
        study, enqueued, token, force = request.study, request.arrival, request.token, request.force
        ctx = self.ctx
        ctx.ensure_ready()
        # The marker alone decides whether this message is stale (one point read), so a burst
        # of N arrivals costs N cheap checks and one partition read, not N partition reads.
        marker = ctx.index.get_marker(study)
        last_arrival = float(marker.get("last_arrival", 0)) if marker else 0.0
        if not force:
            if token is None and abs(last_arrival - enqueued) > 1e-6:
                # Not the marker's last arrival: the instance that wrote it has its own message.
                log.info("Settle %s: superseded by another arrival", study)
                return SettleResult(study, "superseded")
            if token is not None and (last_arrival > enqueued + 1e-6 or marker is None
                                      or marker.get("settle_token") != token):
                log.info("Settle %s: superseded by a newer arrival or schedule", study)
                return SettleResult(study, "superseded")
        rows, _ = ctx.index.study_partition(study)
        previous = ctx.index.get_study_entity(study)
        old_series = {e["RowKey"]: e for e in ctx.index.list_series_entities(study)}
        if not rows:
            return self._deleted(study, previous, old_series)

        by_series: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in rows:
            by_series[r.series_instance_uid].append(r)
        newest = max(rows, key=lambda r: r.updated_at or r.ingested_at or "")
        now = utcnow()
        study_rec = StudyRecord(**study_part(newest))
        study_rec.modalities_in_study = sorted({r.modality for r in rows if r.modality})
        study_rec.sop_classes_in_study = sorted({r.sop_class_uid for r in rows if r.sop_class_uid})
        study_rec.number_of_study_related_series = len(by_series)
        study_rec.number_of_study_related_instances = len(rows)
        study_rec.updated_at = now

        stable = time.time() - last_arrival >= ctx.settings.stable_age_seconds
        series_out: list[tuple[SeriesRecord, dict[str, Any]]] = []
        events = []
        bundles = 0
        for uid, members in by_series.items():
            head = max(members, key=lambda r: r.updated_at or r.ingested_at or "")
            se = SeriesRecord(**study_part(study_rec), **series_part(head))
            se.number_of_series_related_instances = len(members)
            se.derived = all(m.derived for m in members)
            se.updated_at = now
            version = _version(members)
            old = old_series.get(uid, {})
            extra: dict[str, Any] = {"version": version, "bundle_version": old.get("bundle_version", ""),
                                     "bundle_at": old.get("bundle_at", ""),
                                     "stable_version": old.get("stable_version", "")}
            if extra["bundle_version"] != version:
                extra["bundle_at"] = self._write_bundle(study, uid, members, since=extra["bundle_at"] or None)
                extra["bundle_version"] = version
                bundles += 1
            if stable and extra["stable_version"] != version:
                se.stable_at = now
                events.append(series_event(EventType.SERIES_STABLE, se, service_host=ctx.settings.service_host_name,
                                           partition=ctx.settings.partition_name, sequence=version))
                extra["stable_version"] = version
            elif old.get("stable_at"):
                se.stable_at = old.get("stable_at")
            series_out.append((se, extra))

        study_version = _version(rows)
        new_lookups = lookup_rows(study_rec, [s for s, _ in series_out], rows)
        ctx.index.put_lookups(new_lookups)
        stale = _stale_lookups(previous, new_lookups)
        if stale:
            ctx.index.delete_lookups(stale)
        gone_series = set(old_series) - set(by_series)
        if gone_series:
            ctx.index.delete_series_rows(study, gone_series)
        study_extra: dict[str, Any] = {
            "version": study_version,
            "stable_version": (previous or {}).get("stable_version", ""),
            # SOP lookups are left out (a large study would overflow the property); DELETE removes them.
            "lookup_keys": orjson.dumps([[pk, rk] for pk, rk, _ in new_lookups
                                         if not pk.startswith(keys.Lookup.SOP + ":")]).decode(),
        }
        if stable and study_extra["stable_version"] != study_version:
            events.append(study_event(EventType.STUDY_STABLE, study_rec, service_host=ctx.settings.service_host_name,
                                      partition=ctx.settings.partition_name, sequence=study_version))
            study_extra["stable_version"] = study_version
        if events:
            ctx.publisher.publish(events)
        # Rows last: a crash before this point repeats the work (and at worst the events).
        ctx.index.put_series(study, series_out)
        ctx.index.put_study(study_rec, study_extra)
        if not stable:
            wait = max(1, round(ctx.settings.stable_age_seconds - (time.time() - last_arrival)))
            new_token = uuid.uuid4().hex
            ctx.index.set_settle_token(study, new_token)
            enqueue_settle(ctx, study, wait, arrival=last_arrival, token=new_token)
        log.info("Settle %s: %d series, %d instances, %d bundles, %d events%s", study, len(by_series), len(rows),
                 bundles, len(events), "" if stable else " (not yet stable)")
        return SettleResult(study, "stable" if stable else "settled", len(by_series), len(rows), bundles, len(events))

    def _write_bundle(self, study: str, series: str, members: list[InstanceRecord], *,
                      since: str | None) -> str:
        """The series metadata bundle: every instance's DICOM JSON in one blob, so WADO-RS
        series metadata is a single read. Incremental: the previous bundle is read once and
        only the sidecars of instances it lacks (or that were replaced since shortly before it
        was built) are fetched, concurrently; removed instances drop out. Returns the build time."""
        svc = self.ctx.clients.blob
        built = utcnow()
        path = layout.series_metadata_path(study, series)
        previous = blobs.get_json(svc, layout.METADATA, path) if since else None
        kept: dict[str, Any] = {}
        for doc in previous or []:
            sop = ((doc.get("00080018") or {}).get("Value") or [None])[0]
            if sop:
                kept[sop] = doc
        cut = _minus(since, BUNDLE_SKEW_SECONDS) if since else ""
        ordered = sorted(members, key=lambda r: (r.instance_number if r.instance_number is not None else 1 << 30,
                                                 r.sop_instance_uid))
        # New instances are the ones missing from the previous bundle; replaced ones (rare) are
        # re-read when updated since shortly before it was built.
        fetch = [r for r in ordered if r.sop_instance_uid not in kept or (r.updated_at or "") >= cut]
        paths = [layout.instance_metadata_path(study, series, r.sop_instance_uid) for r in fetch]
        with ThreadPoolExecutor(max_workers=BUNDLE_READERS) as pool:
            fresh = dict(zip((r.sop_instance_uid for r in fetch),
                             pool.map(lambda p: blobs.get_json(svc, layout.METADATA, p), paths), strict=True))
        docs = [fresh.get(r.sop_instance_uid) or kept.get(r.sop_instance_uid) for r in ordered]
        blobs.put_json(svc, layout.METADATA, path, [d for d in docs if d is not None])
        return built

    def _deleted(self, study: str, previous: dict[str, Any] | None,
                 old_series: dict[str, dict[str, Any]]) -> SettleResult:
        """No instance left (DELETE): remove aggregates and lookups."""
        stale = _stale_lookups(previous, [])
        if stale:
            self.ctx.index.delete_lookups(stale)
        self.ctx.index.delete_series_rows(study, old_series)
        self.ctx.index.delete_study_row(study)
        self.ctx.index.delete_marker(study)
        log.info("Settle %s: no instances left; aggregates and lookups removed", study)
        return SettleResult(study, "deleted")


def _stale_lookups(previous: dict[str, Any] | None,
                   current: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    if not previous or not previous.get("lookup_keys"):
        return []
    old = {(pk, rk) for pk, rk in orjson.loads(previous["lookup_keys"])}
    return sorted(old - {(pk, rk) for pk, rk, _ in current if not pk.startswith(keys.Lookup.SOP + ":")})
