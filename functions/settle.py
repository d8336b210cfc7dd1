"""Settle: a queue message per study and quiet period → shared.ingest.settle."""

from __future__ import annotations

import azure.functions as func

from shared.ingest.schedule import SettleRequest
from shared.ingest.settle import SettleService
from shared.services import get_services
from shared.storage import layout

bp = func.Blueprint()


@bp.function_name("settle")
@bp.queue_trigger(arg_name="msg", queue_name=layout.SETTLE_QUEUE, connection="DicomStorage")
def settle(msg: func.QueueMessage) -> None:
    SettleService(get_services()).settle(SettleRequest.from_message(msg.get_body()))
