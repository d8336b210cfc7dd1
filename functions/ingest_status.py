"""GET /api/ingest/status[?blob=<name>]: what happened to an upload."""

from __future__ import annotations

import azure.functions as func
import orjson

from shared.ingest import status
from shared.ingest.context import get_context

bp = func.Blueprint()


@bp.function_name("ingest_status")
@bp.route(route="ingest/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ingest_status(req: func.HttpRequest) -> func.HttpResponse:
    ctx = get_context()
    ctx.ensure_ready()
    blob = req.params.get("blob")
    body = status.blob_status(ctx, blob) if blob else status.summary(ctx)
    return func.HttpResponse(orjson.dumps(body), mimetype="application/json")
