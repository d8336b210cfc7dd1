"""Operations endpoints: health."""

from __future__ import annotations

import azure.functions as func
import orjson

from shared import health
from shared.config import get_settings

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    checks = health.check_all(get_settings())
    ok = all(c.up for c in checks)
    body = {
        "status": "up" if ok else "degraded",
        "dependencies": {c.name: {"up": c.up, "ms": round(c.ms, 1), **({"error": c.detail} if c.detail else {})}
                         for c in checks},
    }
    return func.HttpResponse(orjson.dumps(body), status_code=200 if ok else 503, mimetype="application/json")
