"""Nothing lost: re-drive the poison queues, settle what lost its trigger, and sweep the inbox (timers)
-> shared.ingest.redrive / sweep / retention.

* ``redrive`` (every 5 minutes): settle messages and inbox blobs the host parked in poison queues go
  back with backoff; what runs out of redrives is logged for the alert (``poison-exhausted``). Then the
  pending sweep: studies whose pending rows outlived the stable age by far get a settle run.
* ``inbox_retention`` (hourly): inbox blobs past ``DICOMFLOW_INBOX_RETENTION_DAYS`` are deleted once
  their outcome is recorded, ingested again when it is not.
"""

from __future__ import annotations

import azure.functions as func

from shared.ingest.redrive import Redriver
from shared.ingest.retention import InboxSweeper
from shared.ingest.sweep import PendingSweep
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("redrive")
@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False, use_monitor=False)
def redrive(timer: func.TimerRequest) -> None:
    svc = get_services()
    Redriver(svc).run()
    PendingSweep(svc).run()


@bp.function_name("inbox_retention")
@bp.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=False)
def inbox_retention(timer: func.TimerRequest) -> None:
    InboxSweeper(get_services()).run()
