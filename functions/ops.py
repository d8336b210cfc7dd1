"""Operations endpoints: health (anonymous and cheap, with the failback gate of
:mod:`shared.ingest.failback`) and the deep dependency checks (admin).

Uses the http-fastapi request/response types like every HTTP function in the app:
with HTTP streams enabled (DICOMweb retrieve needs them) the Python worker serves
all HTTP triggers through them.
"""

from __future__ import annotations

import asyncio

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.access import guarded
from shared import health
from shared.auth.roles import Role
from shared.config import get_settings
from shared.ingest import failback

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health_check(req: Request) -> Response:
    settings = get_settings()
    # The failback gate (off unless DICOMFLOW_FAILBACK_MAX_LAG_SECONDS is set): one cached read at most.
    behind = await asyncio.to_thread(failback.catching_up, settings)
    if behind is not None:
        return Response(orjson.dumps(behind), status_code=503, media_type="application/json")
    up = await asyncio.to_thread(health.probe, settings)
    return Response(orjson.dumps({"status": "up" if up else "down"}), status_code=200 if up else 503,
                    media_type="application/json")


@bp.function_name("health_deep")
@bp.route(route="health/deep", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@guarded("health/deep", lambda method: {Role.ADMIN})
async def health_deep(req: Request) -> Response:
    checks = await asyncio.to_thread(health.check_all, get_settings())
    ok = all(c.up for c in checks)
    body = {
        "status": "up" if ok else "degraded",
        "dependencies": {c.name: {"up": c.up, "ms": round(c.ms, 1), **({"error": c.detail} if c.detail else {})}
                         for c in checks},
    }
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")
