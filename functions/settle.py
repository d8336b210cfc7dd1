"""Settle: a queue message per ingested instance (debounced) → shared.ingest.settle."""

from __future__ import annotations

import azure.functions as func

from shared.ingest.context import get_context
from shared.ingest.settle import SettleRequest, SettleService
from shared.storage import layout

bp = func.Blueprint()


@bp.function_name("settle")
@bp.queue_trigger(arg_name="msg", queue_name=layout.SETTLE_QUEUE, connection="DicomStorage")
def settle(msg: func.QueueMessage) -> None:
    SettleService(get_context()).settle(SettleRequest.from_message(msg.get_body()))
