"""GET /api/ingest/status[?blob=<name>]: what happened to an upload (reader or writer role)."""

from __future__ import annotations

import asyncio
from typing import Any

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.access import guarded
from shared.auth.roles import Role
from shared.ingest import status
from shared.services import get_services

bp = func.Blueprint()


def _status(blob: str | None) -> dict[str, Any]:
    svc = get_services()
    svc.ensure_ready()
    return status.blob_status(svc, blob).to_json() if blob is not None else status.summary(svc)


@bp.function_name("ingest_status")
@bp.route(route="ingest/status", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@guarded("ingest/status", lambda method: {Role.READER, Role.WRITER})
async def ingest_status(req: Request) -> Response:
    problem = status.check_params(list(req.query_params.multi_items()))
    if problem:
        return Response(orjson.dumps({"error": problem}), status_code=400, media_type="application/json")
    body = await asyncio.to_thread(_status, req.query_params.get("blob"))
    return Response(orjson.dumps(body), media_type="application/json")
