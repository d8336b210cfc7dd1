"""Settle: a queue message per ingested instance (debounced) → shared.ingest.settle."""

from __future__ import annotations

import azure.functions as func
import orjson

from shared.ingest.context import get_context
from shared.ingest.settle import SettleService
from shared.storage import layout

bp = func.Blueprint()


@bp.function_name("settle")
@bp.queue_trigger(arg_name="msg", queue_name=layout.SETTLE_QUEUE, connection="DicomStorage")
def settle(msg: func.QueueMessage) -> None:
    body = orjson.loads(msg.get_body())
    SettleService(get_context()).settle(body["study"], float(body.get("enqueued", 0)), body.get("token"),
                                        force=bool(body.get("force")))
