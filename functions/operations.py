"""Long-running operations: their steps (queue ``dicom-operations``) -> shared.ops.runner, and
``GET /api/dicomweb/operations/{operation}`` (reader role) -> shared.ops.service."""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.dicomweb import route, run
from shared.auth.roles import Role
from shared.ops import runner
from shared.ops import service as ops_status
from shared.services import get_services
from shared.storage import layout

bp = func.Blueprint()


@bp.function_name("operations")
@bp.queue_trigger(arg_name="msg", queue_name=layout.OPERATIONS_QUEUE, connection="DicomStorage")
def operations(msg: func.QueueMessage) -> None:
    runner.run_step(get_services(), msg.get_body())


@route(bp, "operation_status", "operations/{operation}", ["GET"], lambda method: {Role.READER})
async def operation_status(req: Request) -> Response:
    return await run(req, ops_status.status)
