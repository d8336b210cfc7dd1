"""Long-running operations: a queue message per operation (run or resume) → shared.update.service."""

from __future__ import annotations

import azure.functions as func

from shared.operations.store import OperationMessage
from shared.services import get_services
from shared.storage import layout
from shared.update.service import BulkUpdate

bp = func.Blueprint()


@bp.function_name("operations")
@bp.queue_trigger(arg_name="msg", queue_name=layout.OPERATIONS_QUEUE, connection="DicomStorage")
def operations(msg: func.QueueMessage) -> None:
    BulkUpdate(get_services()).run(OperationMessage.from_message(msg.get_body()).operation)
