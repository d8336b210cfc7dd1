"""No study is left unsettled: settle again what a lost trigger left behind (the pending sweep).

A study's settle runs come from messages its writers send (:mod:`shared.ingest.schedule`). A writer that
stops between a study's write and its group message naming the study (a process killed within a second of
the write, the rewrite's timer) leaves it without one; so does any other lost message. Its pending row is
there all the same (written before the instance row, removed only by a settle run that finds the study
stable), and a pending row far older than the stable age is the sign: every study that is settled normally
has lost its pending rows by then.

The ``redrive`` timer (functions/maintenance.py, every 5 minutes) runs :class:`PendingSweep`: the pending
rows written more than ``stable_age`` + :data:`SWEEP_MARGIN_SECONDS` ago are marked as swept (each as it was
read; a row its writer rewrote meanwhile stays, and the study with it), and their studies get settle
messages, up to ``GROUP_STUDIES`` a message, due at once, with the rows' ETags, so the run that finds the study
stable removes exactly those rows (a series whose instance never came included). A row is swept once: a study
whose settle then fails goes through the poison queue and its redrives like any other
(:mod:`shared.ingest.redrive`), and is not sent again on every pass. The read is the whole pending table (what
arrived in the last quiet period): about one request per 1,000 rows, every 5 minutes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.ingest.schedule import GROUP_STUDIES, SettleRequest
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)

#: How much older than the stable age a pending row must be to be swept: far beyond the settle delay and a
#: settle run's retries, so a study whose settle is merely late (a backlog) is rarely sent twice.
SWEEP_MARGIN_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class SweepReport:
    studies: tuple[str, ...] = ()
    #: Studies whose stale rows a writer rewrote while the sweep ran (alive: left to it).
    skipped: int = 0


class PendingSweep:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def run(self) -> SweepReport:
        svc = self.svc
        cutoff = svc.scheduler.clock() - svc.settings.stable_age_seconds - SWEEP_MARGIN_SECONDS
        swept: dict[str, dict[str, str]] = {}
        skipped = 0
        for study, rows in sorted(svc.index.stale_pending(cutoff).items()):
            etags = svc.index.mark_swept(study, rows)
            if etags is None:
                skipped += 1
            else:
                swept[study] = etags
        studies = list(swept)
        for i in range(0, len(studies), GROUP_STUDIES):
            chunk = studies[i:i + GROUP_STUDIES]
            request = SettleRequest(studies=tuple(chunk), hold=True, pending={s: swept[s] for s in chunk})
            svc.queues.send(layout.SETTLE_QUEUE, request.to_message(), delay_seconds=0.0)
        if studies:
            log.warning("Pending sweep: %d study(ies) had no settle run for %.0f s after their last write; settling "
                        "them now (first: %s)", len(studies), svc.settings.stable_age_seconds + SWEEP_MARGIN_SECONDS,
                        studies[0])
        return SweepReport(tuple(studies), skipped)
