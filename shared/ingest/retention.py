"""Inbox retention: remove an upload only once its outcome is recorded; ingest again what has none.

The inbox blob is the upload itself and how its outcome is found (:mod:`shared.ingest.status`).
A lifecycle rule that deletes inbox blobs after N days whatever happened would delete the only
copy of a file whose ingest never completed (an event lost, a poison message given up). Instead the
``inbox_retention`` timer (functions/maintenance.py, hourly) sweeps the inbox:

* it lists the inbox (5,000 names per request) and takes the blobs created more than
  ``DICOMFLOW_INBOX_RETENTION_DAYS`` ago;
* for each it reads the outcome the way the status API does (the header's ranged read, the
  quarantine copy's properties, the instance row: 3 requests, once per upload, off the ingest path);
* an outcome recorded (archived, updated, duplicate, quarantined) -> the blob is deleted, that
  version only (a blob uploaded again under the same name meanwhile stays);
* no outcome -> it is ingested again now (idempotent: this is also the safety net for a lost
  BlobCreated event), and deleted by a later sweep once the outcome is there; if ingest fails again it
  stays, and the sweep logs the ERROR line the alert watches (``poison-exhausted``).

So the ingest hot path is unchanged (no tag, no metadata write, no log row per instance: see
tests/integration/test_request_budget.py); the price is about 3 requests per upload at the end of
its retention plus the listing, and deletes are free. Infra keeps a lifecycle rule only for old
*versions* of inbox blobs.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shared.ingest.redrive import EXHAUSTED
from shared.ingest.states import FINAL, IngestState
from shared.ports import BlobItem
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)

#: Old uploads one sweep handles at most (the next sweep continues); threads doing it.
MAX_PER_RUN = 20_000
WORKERS = 8


@dataclass(slots=True)
class SweepReport:
    listed: int = 0
    deleted: int = 0
    reingested: int = 0
    kept: list[str] = field(default_factory=list)  # digests of blobs without an outcome that failed again


class InboxSweeper:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def run(self, *, now: dt.datetime | None = None, prefix: str = "", max_blobs: int = MAX_PER_RUN) -> SweepReport:
        now = now or dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(days=self.svc.settings.inbox_retention_days)
        report = SweepReport()
        old: list[BlobItem] = []
        for item in self.svc.blobs.list(layout.INBOX, prefix):
            report.listed += 1
            if item.last_modified is not None and item.last_modified < cutoff:
                old.append(item)
                if len(old) >= max_blobs:
                    break
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="inbox-sweep") as pool:
            for name, state in zip((i.name for i in old), pool.map(self._one, old), strict=True):
                if state == "deleted":
                    report.deleted += 1
                elif state == "reingested":
                    report.reingested += 1
                elif state == "kept":
                    report.kept.append(layout.log_name(name))
        log.info("Inbox retention: %d listed, %d past %.0f days: %d deleted (outcome recorded), %d ingested again "
                 "(no outcome), %d kept", report.listed, len(old), self.svc.settings.inbox_retention_days,
                 report.deleted, report.reingested, len(report.kept))
        return report

    def _one(self, item: BlobItem) -> str:
        from shared.ingest.service import IngestService
        from shared.ingest.status import blob_status

        outcome = blob_status(self.svc, item.name)
        if outcome.state in FINAL:
            return "deleted" if self.svc.blobs.delete(layout.INBOX, item.name, etag=item.etag or None) else "changed"
        if outcome.state is not IngestState.PENDING:
            return "gone"
        try:
            again = IngestService(self.svc).ingest(self.svc.blobs.open(layout.INBOX, item.name))
        except Exception as exc:  # noqa: BLE001 - whatever failed, the blob stays and the alert says so
            log.error("Inbox retention (%s): %s has no outcome after %.0f days and ingest failed again (%s); it "
                      "stays in the inbox", EXHAUSTED, layout.log_name(item.name),
                      self.svc.settings.inbox_retention_days, type(exc).__name__)
            return "kept"
        log.info("Inbox retention: %s had no outcome; ingested again: %s", layout.log_name(item.name), again.state)
        return "reingested"
