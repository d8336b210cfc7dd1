"""One routing run per event: rules → instances in scope → destinations, through the ledger.

Scope by trigger: ``Dicom.StudyStable`` and ``Dicom.InferenceCompleted`` route the
study, ``Dicom.SeriesStable`` the series, ``Dicom.ImageCreated``/``ImageUpdated``
the one instance. Instances are listed from the archive and their headers read
with ranged reads (:func:`shared.dicom.header.read_header`): the full file is only
downloaded when a destination sends it.

Updates: the ledger keys deliveries by instance, so a destination gets each instance once; a rule with
``resendUpdates`` keys a version written by a bulk update (or patient merge) by instance and operation,
so the new version is sent again (on ``Dicom.ImageUpdated``, or with the study when it is stable again).

Retries: a failed delivery is recorded in the ledger with a next-attempt time
(exponential backoff from the rule's ``retry``) and the run ends with
:class:`shared.errors.Transient`, so the event is delivered again (Event Grid's
own retry schedule is the clock). When a delivery has used its ``maxAttempts`` it
is dead: a record is written to ``eventgrid-deadletter/routing/...`` and
``Dicom.RoutingFailed`` is published. A (rule, destination) whose instances are all
delivered by this run publishes ``Dicom.RoutingCompleted``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from shared.config import Settings
from shared.dicom import facts
from shared.dicom.header import read_header
from shared.dicom.ranged import RangedReader
from shared.errors import BadInput, Reason, Transient
from shared.events.payloads import DicomEvent, base_data, subject_for
from shared.events.types import EventType
from shared.ports import BlobGone, BlobStore, Publisher
from shared.routing.destinations import DeliveryError, Item, StudySummary, open_session
from shared.routing.ledger import STUDY_UNIT, Claim, DeliveryRow, DeliveryState, Ledger
from shared.routing.rules import Destination, Rule, RuleSet, RulesStore
from shared.routing.tls import routing_tls
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import OPERATION_META

log = logging.getLogger(__name__)

STUDY_SCOPE = {str(EventType.STUDY_STABLE), str(EventType.INFERENCE_COMPLETED)}
SERIES_SCOPE = {str(EventType.SERIES_STABLE)}
INSTANCE_SCOPE = {str(EventType.IMAGE_CREATED), str(EventType.IMAGE_UPDATED)}

Publish = Callable[[Sequence[DicomEvent]], None]


@dataclass(slots=True)
class Candidate:
    item: Item
    facts: dict[str, Any]


@dataclass(slots=True)
class DestinationOutcome:
    rule: str
    destination: str
    delivered_now: int = 0
    already: int = 0
    pending: int = 0  # failed (will retry), waiting for backoff, or busy elsewhere
    dead_now: list[DeliveryRow] = field(default_factory=list)
    dead_before: int = 0
    complete: bool = False  # announce Dicom.RoutingCompleted
    #: Every dead delivery of this (study, rule, destination), when Dicom.RoutingFailed is to announce them
    #: (nothing pending any more, and more dead than announced before); else empty.
    failed: list[DeliveryRow] = field(default_factory=list)


@dataclass(slots=True)
class RoutingOutcome:
    study: str
    event_type: str
    rules_source: str
    destinations: list[DestinationOutcome] = field(default_factory=list)
    events: list[DicomEvent] = field(default_factory=list)

    @property
    def retry(self) -> bool:
        return any(d.pending for d in self.destinations)


class RoutingPending(Transient):
    """Some deliveries failed and will be retried: the event must be delivered again."""

    def __init__(self, outcome: RoutingOutcome) -> None:
        pending = sum(d.pending for d in outcome.destinations)
        super().__init__(f"Routing of study {outcome.study}: {pending} deliveries wait for a retry.")
        self.outcome = outcome


def facts_of(ds: Any, sop_class: str, event_data: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes rule conditions may name, for one instance."""

    def text(keyword: str) -> str:
        try:
            value = ds.get(keyword)
        except Exception:  # noqa: BLE001 - an undecodable value matches nothing
            return ""
        return "" if value is None else str(value).strip()

    return {
        "Modality": text("Modality"),
        "BodyPartExamined": text("BodyPartExamined"),
        "StationName": text("StationName"),
        "InstitutionName": text("InstitutionName"),
        "SOPClassUID": sop_class,
        "ImageType": "\\".join(str(v) for v in (ds.get("ImageType") or [])),
        "derived": facts.is_derived(sop_class, text("Modality")),
        "aiPriority": bool(event_data.get("priority") or event_data.get("aiPriority")),
    }


def _scope_prefix(event_type: str, data: Mapping[str, Any]) -> tuple[str, str | None]:
    study = str(data.get("imageStudyInstanceUid") or "")
    series = data.get("imageSeriesInstanceUid")
    sop = data.get("imageSopInstanceUid")
    if not study:
        raise BadInput(Reason.ROUTING_BAD_EVENT, "Event data needs imageStudyInstanceUid.")
    if event_type in INSTANCE_SCOPE:
        if not (series and sop):
            raise BadInput(Reason.ROUTING_BAD_EVENT,
                "Instance events need imageSeriesInstanceUid and imageSopInstanceUid.")
        return study, layout.instance_path(study, str(series), str(sop))
    if event_type in SERIES_SCOPE:
        if not series:
            raise BadInput(Reason.ROUTING_BAD_EVENT, "Series events need imageSeriesInstanceUid.")
        return study, layout.series_prefix(study, str(series))
    return study, layout.study_prefix(study)


def candidates(blobs: BlobStore, event_type: str, data: Mapping[str, Any]) -> tuple[str, list[Candidate]]:
    study, prefix = _scope_prefix(event_type, data)
    names = [b.name for b in blobs.list(layout.ARCHIVE, prefix or "") if b.name.endswith(".dcm")]
    out = []
    for name in sorted(names):
        blob = blobs.open(layout.ARCHIVE, name)
        try:
            header = read_header(RangedReader(blob))
        except BadInput as exc:
            log.warning("Routing skips archived blob %s: %s", name, exc.reason)
            continue
        except BlobGone:  # deleted since it was listed
            continue
        if not (header.series_uid and header.sop_uid and header.sop_class_uid):
            continue

        def download(out: IO[bytes], path: str = name) -> None:
            blobs.download_to(layout.ARCHIVE, path, out)  # streamed into a spool file

        item = Item(
            study=study,
            series=header.series_uid,
            sop=header.sop_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=header.transfer_syntax_uid,
            download=download,
            updated_by=blob.metadata.get(OPERATION_META, ""),
        )
        out.append(Candidate(item, facts_of(header.dataset, header.sop_class_uid, data)))
    return study, out


def deadletter_path(row: DeliveryRow) -> str:
    return layout.routing_deadletter_path(row.study, row.rule, row.destination, row.unit)


def _deliver(
    ledger: Ledger,
    rule: Rule,
    destination: Destination,
    matched: list[Candidate],
    *,
    event_type: str,
    study: str,
    svc: Services,
    priority: bool,
) -> DestinationOutcome:
    result = DestinationOutcome(rule.name, destination.id)
    dead_before: list[DeliveryRow] = []
    items = [c.item for c in matched]
    session = open_session(destination, items=items, blobs=svc.blobs, queues=svc.queues, rule=rule.name,
                           study=study, tls=routing_tls(svc.settings))
    try:
        if destination.per_study:
            summary = StudySummary(
                study=study,
                rule=rule.name,
                trigger=event_type,
                modalities=sorted({str(c.facts["Modality"]) for c in matched if c.facts["Modality"]}),
                instance_count=len(items),
                priority=priority,
                series=sorted({i.series for i in items}),
            )
            units: list[tuple[str, str, Callable[[], None]]] = [(STUDY_UNIT, "", lambda: session.send_study(summary))]
        else:
            # A new version made by a bulk update is a unit of its own when the rule sends updates again.
            units = [(f"{i.sop}~{i.updated_by}" if rule.resend_updates and i.updated_by else i.sop, i.series,
                      lambda i=i: session.send(i)) for i in items]  # type: ignore[misc]
        for unit, series, send in units:
            claim, row = ledger.claim(study, series, rule.name, destination.id, unit)
            if claim == Claim.DONE:
                result.already += 1
                continue
            if claim == Claim.DEAD:
                result.dead_before += 1
                dead_before.append(row)
                continue
            if claim in (Claim.BUSY, Claim.WAIT):
                result.pending += 1
                continue
            try:
                send()
            except DeliveryError as exc:
                limit = row.attempts if exc.permanent else rule.max_attempts
                row = ledger.failed(row, exc.message, max_attempts=limit, backoff_seconds=rule.backoff_seconds)
                if row.state == DeliveryState.DEAD:
                    result.dead_now.append(row)
                else:
                    result.pending += 1
                log.warning(
                    "Routing %s to %s: %s attempt %d failed (%s)",
                    rule.name,
                    destination.type,
                    unit,
                    row.attempts,
                    exc.message,
                )
                continue
            ledger.delivered(row)
            result.delivered_now += 1
    finally:
        session.close()
    # Announce completion once everything is delivered: by this run, or by earlier runs whose
    # announcement a concurrent delivery pre-empted (they ended with work pending).
    if not result.pending and not result.dead_now and not result.dead_before:
        result.complete = bool(result.delivered_now) or not ledger.announced(study, rule.name, destination.id)
    elif not result.pending:
        # Announce a failure once, when no delivery of this destination is left to retry: units that die in
        # different runs (one waiting for its backoff while another used its last attempt) make one event.
        dead = dead_before + result.dead_now
        if len(dead) > ledger.failure_announced(study, rule.name, destination.id):
            result.failed = dead
    return result


def _events(outcome: RoutingOutcome, settings: Settings, event_type: str) -> list[DicomEvent]:
    events = []
    for d in outcome.destinations:

        def data(d: DestinationOutcome = d, sequence: str | None = None, **extra: Any) -> dict[str, Any]:
            base = base_data(
                settings.service_host_name,
                settings.partition_name,
                outcome.study,
                None,
                None,
                sequence or f"{d.rule}|{d.destination}|{event_type}",
            )
            base.update({"rule": d.rule, "destination": d.destination.split(":", 1)[0], "trigger": event_type})
            base.update(extra)
            return base

        subject = subject_for(outcome.study)
        if d.failed:
            last = max(d.failed, key=lambda r: (r.updated_at is not None, r.updated_at or dt.datetime.min))
            events.append(
                DicomEvent(
                    EventType.ROUTING_FAILED,
                    subject,
                    # the sequence (hence the event id) counts the dead: one id per announcement, never two events
                    data(
                        sequence=f"{d.rule}|{d.destination}|{event_type}|failed:{len(d.failed)}",
                        failed=len(d.failed),
                        lastError=last.last_error[:512],
                        attempts=max(r.attempts for r in d.failed),
                    ),
                )
            )
        elif d.complete:
            events.append(DicomEvent(EventType.ROUTING_COMPLETED, subject, data(delivered=d.delivered_now + d.already)))
    return events


def route_event(
    event_type: str,
    data: Mapping[str, Any],
    *,
    svc: Services,
    rules: RuleSet | None = None,
    publisher: Publisher | None = None,
) -> RoutingOutcome:
    """Route what ``event_type`` + ``data`` name; raise :class:`Transient` if deliveries must be retried.
    ``publisher`` defaults to the services' (tests pass a recording one)."""
    settings = svc.settings
    if rules is None:
        rules = RulesStore(svc.blobs).current()
    outcome = RoutingOutcome(str(data.get("imageStudyInstanceUid") or ""), event_type, rules.source)
    firing = rules.for_event(event_type)
    if not firing:
        return outcome
    study, found = candidates(svc.blobs, event_type, data)
    ledger = Ledger(svc.tables)
    priority = bool(data.get("priority") or data.get("aiPriority"))
    for rule in firing:
        matched = [c for c in found if rule.matches(c.facts)]
        if not matched:
            continue
        for destination in rule.destinations:
            outcome.destinations.append(
                _deliver(
                    ledger,
                    rule,
                    destination,
                    matched,
                    event_type=event_type,
                    study=study,
                    svc=svc,
                    priority=priority,
                )
            )
    dead = [row for d in outcome.destinations for row in d.dead_now]
    if dead:
        for row in dead:
            record = {
                "study": row.study,
                "series": row.series,
                "unit": row.unit,
                "rule": row.rule,
                "destination": row.destination,
                "attempts": row.attempts,
                "lastError": row.last_error,
                "trigger": event_type,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
            svc.blobs.write(layout.EVENTS_DEADLETTER, deadletter_path(row), orjson.dumps(record),
                            content_type="application/json")
    outcome.events = _events(outcome, settings, event_type)
    if outcome.events:
        (publisher or svc.publisher).publish(outcome.events)
    for d in outcome.destinations:
        if d.complete:
            ledger.mark_announced(study, d.rule, d.destination, d.delivered_now + d.already)
        if d.failed:
            ledger.mark_failure_announced(study, d.rule, d.destination, len(d.failed))
    for d in outcome.destinations:
        log.info(
            "Routing %s -> %s for study %s: %d delivered, %d already, %d pending, %d dead",
            d.rule,
            d.destination.split(":", 1)[0],
            study,
            d.delivered_now,
            d.already,
            d.pending,
            len(d.dead_now),
        )
    if outcome.retry:
        raise RoutingPending(outcome)
    return outcome


_rules_cache: dict[str, tuple[float, RuleSet]] = {}


def cached_rules(svc: Services, ttl: float | None = None) -> RuleSet:
    """The rules, read at most every ``ttl`` seconds per worker (routing also runs per instance
    for immediate rules; one config read per event would double the requests per instance)."""
    import time

    ttl = svc.settings.routing_rules_ttl_seconds if ttl is None else ttl
    key = str(id(svc.blobs))
    hit = _rules_cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    rules = RulesStore(svc.blobs).current()
    _rules_cache[key] = (now, rules)
    return rules


def handle_event(event_type: str, data: Mapping[str, Any], svc: Services) -> RoutingOutcome | None:
    """The service boundary for the ``routing`` function.

    Bad event data is logged and dropped; :class:`RoutingPending` (deliveries to retry)
    and storage failures propagate so the event is delivered again.
    """
    rules = cached_rules(svc)
    try:
        return route_event(event_type, data, svc=svc, rules=rules)
    except BadInput as exc:
        log.warning("Routing event dropped: %s (%s)", exc.reason, exc.message)
        return None
