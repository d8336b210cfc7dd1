"""GET /api/audit?study=&actor=&patient=&from=&to=&limit= : the audit trail (admin role) -> shared.audit.service."""

from __future__ import annotations

import asyncio

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.access import guarded
from shared.audit import service
from shared.auth.roles import Role
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("audit")
@bp.route(route="audit", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@guarded("audit", lambda method: {Role.ADMIN})
async def audit(req: Request) -> Response:
    def answer() -> tuple[int, dict[str, object]]:
        svc = get_services()
        svc.ensure_ready()
        return service.answer(svc, dict(req.query_params))

    status, body = await asyncio.to_thread(answer)
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
