"""Access control for HTTP functions: CORS preflight, bearer tokens and roles, one audit line.

``guarded(route, need)`` wraps an HTTP function (FastAPI-typed ``req``) so it runs only for a caller
whose token grants the role ``need(method)`` returns; the answer carries the CORS headers for the
request's Origin. The functions it wraps are ``auth_level=ANONYMOUS``: the Functions host's own key
check would refuse browser clients, which can only send ``Authorization: Bearer``. ``cors_preflight``
answers every ``OPTIONS`` under the route prefix. The logic lives in :mod:`shared.auth`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.auth import service as access
from shared.auth.cors import CorsPolicy
from shared.auth.roles import Role
from shared.config import get_settings

bp = func.Blueprint()
Handler = Callable[[Request], Awaitable[Response]]


def _cors() -> CorsPolicy:
    return CorsPolicy(get_settings().auth.cors_origins)


def guarded(route: str, need: Callable[[str], Iterable[Role]]) -> Callable[[Handler], Handler]:
    """Wrap an HTTP function: authorize (roles from ``need(method)``), add CORS headers, audit."""
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def inner(req: Request) -> Response:
            settings = get_settings().auth
            headers = {k.lower(): v for k, v in req.headers.items()}
            study = req.path_params.get("study")
            principal = None
            try:
                principal = await asyncio.to_thread(access.authorize, settings, headers, need(req.method),
                                                    dict(req.query_params))
            except access.AccessDenied as denied:
                access.audit(None, req.method, route, study, denied.status, f"denied:{denied.reason}")
                return _with_cors(Response(orjson.dumps({"error": denied.message}), status_code=denied.status,
                                           headers=denied.headers, media_type="application/json"),
                                  headers.get("origin"))
            req.state.principal = principal  # for handlers that record who asked (bulk update, merge)
            resp = await fn(req)
            access.audit(principal, req.method, route, study, resp.status_code, "allowed")
            return _with_cors(resp, headers.get("origin"))
        inner.guarded_route = route  # type: ignore[attr-defined]  # pinned by tests/unit/test_wiring.py
        return inner
    return wrap


def _with_cors(resp: Response, origin: str | None) -> Response:
    for k, v in _cors().response_headers(origin).items():
        resp.headers[k] = v
    return resp


@bp.function_name("cors_preflight")
@bp.route(route="{*path}", methods=["OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
async def cors_preflight(req: Request) -> Response:
    status, headers = _cors().preflight({k.lower(): v for k, v in req.headers.items()})
    return Response(b"", status_code=status, headers=headers)
