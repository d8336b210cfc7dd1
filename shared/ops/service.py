"""``GET {dicomweb}/operations/{id}``: an operation's status (reader role), the Azure DICOM service's shape:
202 while it is not started or running, 200 once it is completed or failed, 404 for an unknown id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.dicomweb.errors import BadRequest, NotFoundProblem
from shared.dicomweb.reply import Reply
from shared.ops.store import OperationStore

if TYPE_CHECKING:
    from shared.dicomweb.service import Call


def status(call: Call) -> Reply:
    from shared.dicomweb.service import services

    if call.params:
        raise BadRequest(f"Query parameter {call.params[0][0]!r} is not supported on an operation.")
    op = OperationStore(services(call).tables).get(call.path.get("operation", ""))
    if op is None:
        raise NotFoundProblem("No such operation: its id is the one the request that started it answered with.")
    return Reply.json(op.to_json(call.base_url), status=200 if op.done else 202, media_type="application/json")
