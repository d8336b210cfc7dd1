"""Nothing stays in a poison queue: re-drive it with backoff, and give up loudly.

The Functions host parks what its retries could not process in poison queues: settle messages in
``dicom-settle-poison`` (the data account) and inbox blobs ingest failed on in
``webjobs-blobtrigger-poison`` (the host's own account, ``AzureWebJobsStorage``). Nothing reads
them by itself. The ``redrive`` timer (functions/maintenance.py, every 5 minutes) does:

* a settle message goes back to ``dicom-settle`` with ``redrives`` + 1, delayed by
  :data:`REDRIVE_DELAYS` (1 min, 10 min, 1 h, 4 h, 12 h): each redrive gets settle's own backoff and
  the trigger's retries again, so storage may be in trouble for about a day before anything is given up;
* an inbox blob is ingested again by the timer itself (idempotent; there is no queue to put it back
  on); if that fails, its poison message goes back to the poison queue with ``redrives`` + 1, hidden
  for the same delays;
* after the last redrive the message is given up: a record in ``eventgrid-deadletter/poison/<queue>/``
  and one ERROR log line ``Redrive gave up (poison-exhausted): ...`` (UIDs, blob digests, counts; no
  names). That line is what the alert watches (``traces | where message has "poison-exhausted"``); for
  a given-up settle nothing is lost (the rows are written; ``python -m tools reprocess --study`` announces
  the study), for a given-up blob the inbox keeps it (the retention sweep never removes a blob without an
  outcome, :mod:`shared.ingest.retention`) and ingests it again on its next pass.

A message that is not ours (another function's, or unreadable) is left where it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.ingest.schedule import SettleRequest
from shared.ports import QueueMessage, Queues
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)

SETTLE_POISON: Final = f"{layout.SETTLE_QUEUE}-poison"
BLOB_POISON: Final = "webjobs-blobtrigger-poison"
#: Seconds before each redrive; after the last one the message is given up.
REDRIVE_DELAYS: Final = (60.0, 600.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
#: Messages one run takes from each queue (the timer runs every 5 minutes).
BATCH: Final = 32
#: How long a message a run is working on stays hidden from another run (a foreign one reappears then).
LEASE_SECONDS: Final = 60.0
#: The marker of the ERROR line an alert watches.
EXHAUSTED: Final = "poison-exhausted"


@dataclass(slots=True)
class RedriveReport:
    settle_redriven: int = 0
    blobs_ingested: int = 0
    blobs_retried: int = 0
    given_up: list[str] = field(default_factory=list)
    skipped: int = 0


class Redriver:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def run(self) -> RedriveReport:
        report = RedriveReport()
        self._settle(report)
        host = self.svc.host_queues
        if host is not None:
            self._blobs(host, report)
        if report.settle_redriven or report.blobs_ingested or report.blobs_retried or report.given_up:
            log.info("Redrive: %d settle message(s) re-driven, %d blob(s) ingested, %d to retry, %d given up",
                     report.settle_redriven, report.blobs_ingested, report.blobs_retried, len(report.given_up))
        return report

    # -- settle ---------------------------------------------------------------------------------
    def _settle(self, report: RedriveReport) -> None:
        queues = self.svc.queues
        for msg in queues.receive(SETTLE_POISON, max_messages=BATCH, visibility_timeout=LEASE_SECONDS):
            try:
                request = SettleRequest.from_message(msg.text)
            except ValueError:
                report.skipped += 1  # not ours: leave it (it shows again after the lease)
                continue
            if request.redrives >= len(REDRIVE_DELAYS):
                self._give_up(queues, SETTLE_POISON, msg, {"study": request.study, "redrives": request.redrives},
                              f"settle of study {request.study}", report)
                continue
            again = dataclasses.replace(request, attempt=0, redrives=request.redrives + 1)
            queues.send(layout.SETTLE_QUEUE, again.to_message(), delay_seconds=REDRIVE_DELAYS[request.redrives])
            queues.delete(SETTLE_POISON, msg)
            report.settle_redriven += 1

    # -- inbox blobs ----------------------------------------------------------------------------
    def _blobs(self, host: Queues, report: RedriveReport) -> None:
        from shared.ingest.service import IngestService

        for msg in host.receive(BLOB_POISON, max_messages=BATCH, visibility_timeout=LEASE_SECONDS):
            body = _json(msg.text)
            if (body is None or body.get("ContainerName") != layout.INBOX
                    or not str(body.get("FunctionId", "")).endswith(".ingest") or not body.get("BlobName")):
                report.skipped += 1
                continue
            name, redrives = str(body["BlobName"]), int(body.get("dicomflowRedrives") or 0)
            try:
                outcome = IngestService(self.svc).ingest(self.svc.blobs.open(layout.INBOX, name))
            except Exception as exc:  # noqa: BLE001 - any failure is a failed redrive: one bad blob must not
                # stop the run (and every later run) before the messages behind it; it is retried with backoff.
                if redrives >= len(REDRIVE_DELAYS):
                    self._give_up(host, BLOB_POISON, msg, {"blob": layout.log_name(name), "redrives": redrives},
                                  f"ingest of {layout.log_name(name)} ({type(exc).__name__})", report)
                    continue
                body["dicomflowRedrives"] = redrives + 1
                host.send(BLOB_POISON, orjson.dumps(body).decode(), delay_seconds=REDRIVE_DELAYS[redrives])
                host.delete(BLOB_POISON, msg)
                report.blobs_retried += 1
                continue
            log.info("Redrive: ingest of %s from the poison queue: %s", layout.log_name(name), outcome.state)
            host.delete(BLOB_POISON, msg)
            report.blobs_ingested += 1

    # -- giving up --------------------------------------------------------------------------------
    def _give_up(self, queues: Queues, queue: str, msg: QueueMessage, record: dict[str, Any], what: str,
                 report: RedriveReport) -> None:
        now = dt.datetime.now(dt.UTC)
        path = f"poison/{queue}/{now:%Y/%m/%d}/{msg.id}.json"
        body = orjson.dumps({**record, "queue": queue, "at": now.isoformat()})
        self.svc.blobs.write(layout.EVENTS_DEADLETTER, path, body, content_type="application/json")
        queues.delete(queue, msg)
        log.error("Redrive gave up (%s): %s after %d redrives; record %s/%s", EXHAUSTED, what,
                  len(REDRIVE_DELAYS), layout.EVENTS_DEADLETTER, path)
        report.given_up.append(path)


def _json(text: str) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
